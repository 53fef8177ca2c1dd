# Sourced by load.sh and profile.sh: nginx as the peer they measure accel against.

# nginx_config DIR PORT ORIGIN_PORT CACHE GZIP FWD [SINGLE]: DIR/nginx.conf for a one-worker
# keep-alive reverse proxy on PORT to the origin on ORIGIN_PORT (64 idle upstream connections
# kept, keepalive_requests raised on both sides), with proxy_cache when CACHE is 1, `gzip on`
# (level 6, JSON) when GZIP is 1, and when FWD is 1 the fields accel adds by default
# (X-Forwarded-For/-Proto/-Host, Via and X-Request-Id upstream; Via and X-Request-Id on the
# answer) with the client's Host passed on as accel does. SINGLE=1: no master process (the
# worker is nginx itself, as callgrind needs).
nginx_config() {
    local dir=$1 port=$2 origin_port=$3 cache=$4 gzip=$5 fwd=$6 single=${7:-0}
    local user_line="" master_line="" cache_path="" cache_directives="" gzip_directives="" fwd_directives=""
    mkdir -p "$dir/logs"
    # As root, nginx would switch its worker to `nobody`, who cannot write in $dir.
    if ((EUID == 0)); then user_line="user root;"; fi
    if ((single)); then master_line="master_process off;"; fi
    if ((cache)); then
        cache_path="proxy_cache_path $dir/cache levels=1:2 keys_zone=bench:64m max_size=1g inactive=10m use_temp_path=off;"
        cache_directives="proxy_cache bench; proxy_cache_valid 200 5m; add_header Cache-Status \$upstream_cache_status;"
    fi
    if ((gzip)); then
        gzip_directives="gzip on; gzip_types application/json; gzip_comp_level 6; gzip_min_length 1024; gzip_proxied any; gzip_vary on;"
    fi
    if ((fwd)); then
        # The client's Host instead of nginx's default `Host $proxy_host`, as accel passes it
        # on; the literal `$…` are nginx variables, not the shell's.
        # shellcheck disable=SC2016
        fwd_directives='proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header Via "1.1 nginx";
            proxy_set_header X-Request-Id $request_id;
            add_header Via "1.1 nginx";
            add_header X-Request-Id $request_id;'
    fi
    cat >"$dir/nginx.conf" <<EOF
$user_line
$master_line
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy_temp;
    fastcgi_temp_path $dir/fastcgi_temp;
    uwsgi_temp_path $dir/uwsgi_temp;
    scgi_temp_path $dir/scgi_temp;
    keepalive_requests 1000000;
    upstream origin {
        server 127.0.0.1:$origin_port;
        keepalive 64;
        keepalive_requests 1000000;
    }
    $cache_path
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            $fwd_directives
            $cache_directives
            $gzip_directives
        }
    }
}
EOF
}
