#!/usr/bin/python3
"""Long-lived TCP line echo for the ecmp lab: answers each line with "NAME LINE".

Usage: line_echo.py NAME PORT [PORT...]   (listens on every address of the namespace)
"""
import asyncio
import sys


async def serve(name, reader, writer):
    try:
        while line := await reader.readline():
            writer.write(name + b" " + line)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main():
    name = sys.argv[1].encode()
    servers = [await asyncio.start_server(lambda r, w: serve(name, r, w), None, int(p), backlog=4096)
               for p in sys.argv[2:]]
    await asyncio.gather(*(s.serve_forever() for s in servers))


asyncio.run(main())
