#!/bin/sh
# Patroni's bootstrap.post_init: once, on the member that initialised the cluster. $1 is a
# connection URL as the superuser; DATABASE_NAME is the member's (wallet, or ledger).
set -eu
psql "$1" -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"${DATABASE_NAME:?}\""
