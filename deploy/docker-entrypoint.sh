#!/bin/sh
# Entrypoint of the Strongroom image: `strongroom "$@"`, after making sure that the data
# directory holds an organisation when the command is `serve`:
#
# - /data already holds strongroom.toml: nothing to do;
# - /seed holds one (a cluster: every node shares strongroom.toml, authority.pem and
#   admin.token, see compose.yaml): copy those three files into /data;
# - /data is empty: `strongroom init` a new organisation there (STRONGROOM_ORG names it;
#   STRONGROOM_DATABASE_URL and STRONGROOM_BUS_URL, if set, are written into its config).
#
# Anything else in /data is left alone and the server says what is missing.
set -eu

DATA=/data
SEED=/seed

if [ "${1:-}" = "serve" ] && [ ! -e "$DATA/strongroom.toml" ]; then
    if [ -e "$SEED/strongroom.toml" ]; then
        echo "strongroom: copying the organisation's files from $SEED into $DATA" >&2
        cp "$SEED/strongroom.toml" "$DATA/strongroom.toml"
        for secret in authority.pem admin.token; do
            if [ -e "$SEED/$secret" ]; then
                install -m 0600 "$SEED/$secret" "$DATA/$secret"
            fi
        done
    elif [ -z "$(ls -A "$DATA" | grep -v '^lost+found$' || true)" ]; then
        strongroom init --data "$DATA" --org "${STRONGROOM_ORG:-Strongroom}"
    fi
fi

exec strongroom "$@"
