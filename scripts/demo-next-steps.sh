#!/bin/sh
# What to type after `make demo`: ./scripts/demo-next-steps.sh BIN STATE, with BIN the venv's
# bin folder and STATE the ledger the demo wrote (both as the Makefile names them).
set -eu
bin=${1:?usage: demo-next-steps.sh BIN STATE}
state=${2:?usage: demo-next-steps.sh BIN STATE}
cat <<TEXT

Next (or first . $bin/activate, then each command without $bin/):
  $bin/logdispatch summary --state $state
  $bin/logdispatch report --state $state --out report.html

A master and two workers by hand, from this folder: a key, then each command in its own
terminal (Ctrl-C stops it):
  (umask 077; $bin/python -c 'import secrets; print(secrets.token_hex(32))' > demo.key)
  $bin/logdispatch serve sample_logs --authkey-file demo.key --state .logdispatch-serve --http :8080
  $bin/logdispatch work --authkey-file demo.key --processes 2
then open http://127.0.0.1:8080/ for the live report, or:
  $bin/logdispatch status --authkey-file demo.key
TEXT
