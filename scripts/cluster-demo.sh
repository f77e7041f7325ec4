#!/usr/bin/env bash
# The cluster demo: a throwaway PostgreSQL and three bank nodes on this
# machine, narrated -- commands spread over the nodes, transfers crossing
# nodes, a node killed with SIGKILL and its accounts served again by the
# others, the node restarted and rejoining, balances conserved at the end,
# and `sourcery cluster` at each step. Everything stops and is removed at
# the end (the nodes' logs stay in the printed folder until then).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
bash scripts/build.sh bank-node sourcery >/dev/null
bin="$root/${SOURCERY_BUILD_DIR:-build}/bin"
if ! command -v curl >/dev/null; then
  echo "installing curl" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
fi

work="$(mktemp -d /tmp/sourcery-cluster-demo.XXXXXX)"
chmod 755 "$work" # the server runs as postgres
uri="$(bash scripts/pg.sh start "$work/pg" | tail -1)&schema=cluster_demo"
# Mutual TLS between the nodes and HTTPS to them: a throwaway CA and a
# certificate per node naming this machine, made by openssl
# (SOURCERY_DEMO_TLS=0: plain links on loopback, plain HTTP).
tls=()
scheme=http
curl_tls=()
if [ "${SOURCERY_DEMO_TLS:-1}" = 1 ]; then
  scheme=https
  curl_tls=(--cacert "$work/ca.pem")
  echo "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$work/san.ext"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=demo-ca \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
  for n in 1 2 3; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=node$n" \
      -keyout "$work/node$n.key" -out "$work/node$n.csr" 2>/dev/null
    openssl x509 -req -days 1 -in "$work/node$n.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
      -CAcreateserial -extfile "$work/san.ext" -out "$work/node$n.pem" 2>/dev/null
  done
fi
declare -A pid
cleanup() {
  for n in 1 2 3; do [ -n "${pid[$n]:-}" ] && kill -TERM "${pid[$n]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bash "$root/scripts/pg.sh" destroy "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '%s\n' "$*"; }
section() { printf '\n-- %s\n' "$*"; }
http() { echo $((8180 + $1)); }
start_node() {
  [ "${SOURCERY_DEMO_TLS:-1}" = 1 ] && tls=(--tls-cert "$work/node$1.pem" --tls-key "$work/node$1.key" --tls-ca "$work/ca.pem")
  "$bin/bank-node" --store "$uri" --cluster demo --node "127.0.0.1:$((7180 + $1))" --http "$(http "$1")" "${tls[@]}" \
    >"$work/node$1.out" 2>>"$work/node$1.log" &
  pid[$1]=$!
  for _ in $(seq 1 100); do grep -q listening "$work/node$1.out" 2>/dev/null && break; sleep 0.1; done
  say "  node $1: $(head -1 "$work/node$1.out")"
}
"$bin/sourcery" init --store "$uri" >/dev/null # the store the nodes share, made once
show_cluster() { "$bin/sourcery" cluster --store "$uri" --cluster demo | sed 's/^/  /'; }
get() { curl -s "${curl_tls[@]}" "$scheme://localhost:$(http "$1")$2"; }
post() { curl -s "${curl_tls[@]}" -X POST "$scheme://localhost:$(http "$1")$2" -H 'content-type: application/json' -d "$3"; }
balance() { get "$1" "/accounts/$2" | sed 's/.*"balance":\([-0-9]*\).*/\1/'; }

say "== Sourcery cluster demo =="
say "PostgreSQL: $uri"
say "logs: $work"
[ "${SOURCERY_DEMO_TLS:-1}" = 1 ] && say "links between nodes: mutual TLS; clients: HTTPS; certificates of a throwaway CA in $work"

section "1. three nodes join one cluster through the store"
for n in 1 2 3; do start_node "$n"; done
sleep 1
show_cluster

section "2. commands sent to any node run on the node owning the account"
accounts=(alice bob carol dave erin frank)
for a in "${accounts[@]}"; do post 1 /accounts "{\"account\":\"$a\"}" >/dev/null; done
deposited=0
for i in "${!accounts[@]}"; do
  n=$(( i % 3 + 1 ))
  r=$(post "$n" "/accounts/${accounts[$i]}/deposits" '{"amount":100}')
  deposited=$(( deposited + 100 ))
  say "  deposit 100 to ${accounts[$i]} through node $n -> $r"
done
for n in 1 2 3; do
  f=$(get "$n" /metrics | awk '/^sourcery_cluster_commands_forwarded_total/ {print $2}')
  s=$(get "$n" /metrics | awk '/^sourcery_cluster_commands_served_total/ {print $2}')
  say "  node $n forwarded $f commands to their owners and served $s for the others"
done

section "3. transfers cross nodes: the saga runs on one node of the cluster"
for t in 1 2 3 4; do
  from=${accounts[$(( t % 6 ))]}; to=${accounts[$(( (t + 2) % 6 ))]}
  post "$(( t % 3 + 1 ))" /transfers "{\"transfer\":\"t$t\",\"from\":\"$from\",\"to\":\"$to\",\"amount\":25}" >/dev/null
  say "  transfer t$t: $from -> $to, 25 (through node $(( t % 3 + 1 )))"
done
sleep 1
for t in 1 2 3 4; do say "  $(get 1 "/transfers/t$t")"; done
show_cluster

section "4. node 2 killed with SIGKILL: its accounts are served again by the others"
kill -9 "${pid[2]}"; wait "${pid[2]}" 2>/dev/null || true; pid[2]=""
start=$(date +%s%N)
for a in "${accounts[@]}"; do
  until r=$(post 1 "/accounts/$a/deposits" '{"amount":1}') && [[ "$r" == *version* ]]; do sleep 0.05; done
  deposited=$(( deposited + 1 ))
done
say "  every account answered through node 1 again after $(( ($(date +%s%N) - start) / 1000000 )) ms"
show_cluster

section "5. node 2 restarted: it rejoins as a new incarnation and takes its share back"
start_node 2
sleep 1
for a in "${accounts[@]}"; do post 2 "/accounts/$a/deposits" '{"amount":1}' >/dev/null; deposited=$(( deposited + 1 )); done
show_cluster

section "6. balances, read through node 3"
sleep 1
total=0
for a in "${accounts[@]}"; do b=$(balance 3 "$a"); total=$(( total + b )); say "  $a: $b"; done
say "  total $total, deposited $deposited: $([ "$total" -eq "$deposited" ] && echo 'money conserved' || echo 'MISMATCH')"

section "7. node 1 leaves cleanly (SIGTERM): it hands its shards over first"
kill -TERM "${pid[1]}"; wait "${pid[1]}" 2>/dev/null || true; pid[1]=""
# The others take the released shards in their next round (a nudge wakes them).
for _ in $(seq 1 50); do
  "$bin/sourcery" cluster --store "$uri" --cluster demo | grep -q "expired leases" || break
  sleep 0.1
done
show_cluster
[ "$total" -eq "$deposited" ]
