#!/bin/sh
# First start (an empty data folder): the system tables, then the database and user named by
# MARIADB_DATABASE / MARIADB_USER / MARIADB_PASSWORD, then every /etc/mariadb-init/*.sql
# (e.g. a mounted Secret with users and grants). Then the server, on port 3306.
set -eu
DATADIR=/var/lib/mysql
if [ ! -d "$DATADIR/mysql" ]; then
    mariadb-install-db --datadir="$DATADIR" --skip-test-db \
        --auth-root-authentication-method=socket >/dev/null
    init=/tmp/mariadb-init.sql
    umask 077
    {
        if [ -n "${MARIADB_DATABASE:-}" ]; then
            echo "CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\`;"
        fi
        if [ -n "${MARIADB_USER:-}" ]; then
            echo "CREATE USER '$MARIADB_USER'@'%' IDENTIFIED BY '${MARIADB_PASSWORD:-}';"
            echo "GRANT ALL PRIVILEGES ON \`${MARIADB_DATABASE:-*}\`.* TO '$MARIADB_USER'@'%';"
        fi
        for file in /etc/mariadb-init/*.sql; do
            if [ -f "$file" ]; then cat "$file"; fi
        done
    } > "$init"
    set -- --init-file="$init" "$@"
fi
exec mariadbd --datadir="$DATADIR" --bind-address=0.0.0.0 --port=3306 --skip-name-resolve "$@"
