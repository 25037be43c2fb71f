//! Routes and neighbours from the kernel over rtnetlink.
