#!/usr/bin/env python3
"""Line echo over TCP for the namespace lab: answers each line with "NAME <line>", so a
client sees which real server holds its connection. Many connections at once (asyncio).

Usage: tcp_echo.py BIND_ADDRESS PORT NAME
"""
import asyncio
import sys


async def serve(reader, writer, name):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(name + b" " + line)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main():
    addr, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, name), addr, port, backlog=1024, reuse_address=True
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
