# Shared by the bench scripts (sourced, not run): free loopback ports and the nginx boilerplate
# that keeps everything under $DIR, in the foreground.

# N distinct free loopback ports, held together while they are chosen, on one line.
free_ports() { # N
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
' "$1"
}

# The top of an nginx configuration: pid and error log under $DIR, no daemon.
nginx_common() { # NAME
  local user_line=""
  [ "$(id -u)" -eq 0 ] && user_line="user root;"
  cat <<EOF
$user_line
daemon off;
pid $DIR/$1.pid;
error_log $DIR/$1-error.log warn;
events { worker_connections 4096; }
EOF
}

# The lines every http block shares: temporary files under $DIR/NAME-tmp, long keep-alive.
nginx_http_common() { # NAME
  cat <<EOF
    default_type text/plain;
    client_body_temp_path $DIR/$1-tmp/body;
    proxy_temp_path $DIR/$1-tmp/proxy;
    fastcgi_temp_path $DIR/$1-tmp/fastcgi;
    uwsgi_temp_path $DIR/$1-tmp/uwsgi;
    scgi_temp_path $DIR/$1-tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
EOF
}

# The first of N consecutive free loopback ports (for `cleargate lab --port-base`), on one line.
free_base() { # N
  python3 -c '
import random, socket, sys
n = int(sys.argv[1])
for _ in range(200):
    base = random.randrange(20000, 60000)
    socks = []
    try:
        for p in range(base, base + n):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    break
' "$1"
}
