#!/bin/sh
# Container entry point. "serve" (the default command) starts clconv on CLCONV_HOST:CLCONV_PORT,
# with any further arguments passed on (for example --device pocl:0). Any other command runs as
# given, so `docker run IMAGE clconv --version` works. exec makes the server PID 1, so it
# receives the stop signal itself.
set -eu

if [ "${1:-serve}" = "serve" ]; then
    [ "$#" -gt 0 ] && shift
    exec clconv serve --host "${CLCONV_HOST:-0.0.0.0}" --port "${CLCONV_PORT:-8000}" "$@"
fi
exec "$@"
