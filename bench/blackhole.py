#!/usr/bin/env python3
"""A host that hangs: accepts TCP connections on 127.0.0.1:PORT, reads what
it is sent and never answers. bench/webhooks points its BLACKHOLES
endpoints here."""
import socket
import sys
import threading


def hold(conn):
    with conn:
        while conn.recv(65536):
            pass


def main():
    port = int(sys.argv[1])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4096)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=hold, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
