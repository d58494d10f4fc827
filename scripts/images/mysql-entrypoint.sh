#!/bin/sh
# Local stand-in for the official mysql image's entrypoint, on Debian's MariaDB: the same
# MYSQL_ROOT_PASSWORD (or MYSQL_RANDOM_ROOT_PASSWORD), MYSQL_DATABASE, MYSQL_USER and
# MYSQL_PASSWORD variables, a data dir at /var/lib/mysql, and the server on port 3306. Only the
# test bed uses it; production pulls the real image.
set -eu
DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$DATADIR" /run/mysqld
    chown -R mysql:mysql "$DATADIR" /run/mysqld
    chmod 700 "$DATADIR"
    exec setpriv --reuid=mysql --regid=mysql --init-groups "$0" "$@"
fi
if [ ! -d "$DATADIR/mysql" ]; then
    if [ -n "${MYSQL_RANDOM_ROOT_PASSWORD:-}" ]; then
        MYSQL_ROOT_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    fi
    : "${MYSQL_ROOT_PASSWORD:?MYSQL_ROOT_PASSWORD or MYSQL_RANDOM_ROOT_PASSWORD is required}"
    mariadb-install-db --datadir="$DATADIR" --auth-root-authentication-method=normal \
        --skip-test-db >/dev/null
    mariadbd --datadir="$DATADIR" --skip-networking --socket="$SOCKET" &
    pid=$!
    for _ in $(seq 1 100); do
        mariadb-admin --socket="$SOCKET" -uroot ping >/dev/null 2>&1 && break
        sleep 0.2
    done
    {
        printf "ALTER USER 'root'@'localhost' IDENTIFIED BY '%s';\n" "$MYSQL_ROOT_PASSWORD"
        if [ -n "${MYSQL_DATABASE:-}" ]; then
            printf 'CREATE DATABASE `%s`;\n' "$MYSQL_DATABASE"
        fi
        if [ -n "${MYSQL_USER:-}" ] && [ -n "${MYSQL_PASSWORD:-}" ]; then
            printf "CREATE USER '%s'@'%%' IDENTIFIED BY '%s';\n" "$MYSQL_USER" "$MYSQL_PASSWORD"
            if [ -n "${MYSQL_DATABASE:-}" ]; then
                printf "GRANT ALL ON \`%s\`.* TO '%s'@'%%';\n" "$MYSQL_DATABASE" "$MYSQL_USER"
            fi
        fi
        printf 'FLUSH PRIVILEGES;\n'
    } | mariadb --socket="$SOCKET" -uroot
    mariadb-admin --socket="$SOCKET" -uroot -p"$MYSQL_ROOT_PASSWORD" shutdown
    wait "$pid" || true
fi
exec mariadbd --datadir="$DATADIR" --socket="$SOCKET" --bind-address=0.0.0.0 --port=3306
