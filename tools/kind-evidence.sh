#!/usr/bin/env bash
# Collect what explains a kind run, before the clusters are deleted:
#   OUT/kind-logs/<cluster>/      `kind export logs` of every zdt-* cluster
#                                 (node journals, kubelet, containerd, pods)
#   OUT/metallb/<cluster>.log     MetalLB's controller and speaker logs, and
#   OUT/metallb/<cluster>.txt     its pods and DaemonSet (when installed)
#   OUT/cloud-provider-kind/<container>.log / .json
#                                 each envoy container cloud-provider-kind
#                                 made: `docker logs` and `docker inspect`
#   OUT/evidence.log              every command run and how it ended
# cloud-provider-kind's own log is written into OUT by the workflow step
# that starts it.
#
# Usage: tools/kind-evidence.sh OUT
# Evidence is best effort: a command that fails is recorded in
# OUT/evidence.log and the rest still runs; the script exits 0 unless it is
# called wrongly. Runs in the nightly workflow after the scenarios, on
# success and failure, and in harness/cli/tests/it/kind_workflow.rs with
# fake kind, docker and kubectl on PATH.
set -u

if [ $# -ne 1 ]; then
  echo "usage: $0 OUT" >&2
  exit 2
fi
out=$1
mkdir -p "$out"
log="$out/evidence.log"
: >>"$log"

# run FILE CMD...: CMD's stdout into FILE (stderr into the log), its exit
# status recorded.
run() {
  local file=$1
  shift
  echo "+ $*" >>"$log"
  "$@" >"$file" 2>>"$log"
  local code=$?
  echo "  exit $code" >>"$log"
  return "$code"
}

# run_both FILE CMD...: as run, stderr into FILE too (a container's log is
# both of its streams).
run_both() {
  local file=$1
  shift
  echo "+ $*" >>"$log"
  "$@" >"$file" 2>&1
  local code=$?
  echo "  exit $code" >>"$log"
  return "$code"
}

# Cluster names, one a line; kind prints "No kind clusters found." on
# stderr when there are none.
clusters=$(kind get clusters 2>>"$log" | grep '^zdt-' || true)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for name in $clusters; do
  mkdir -p "$out/kind-logs"
  run "$tmp/export.out" kind export logs "$out/kind-logs/$name" --name "$name"
  if command -v kubectl >/dev/null 2>&1 &&
    run "$tmp/$name.kubeconfig" kind get kubeconfig --name "$name"; then
    k=(kubectl --kubeconfig "$tmp/$name.kubeconfig")
    if run "$tmp/ns.out" "${k[@]}" get namespace metallb-system; then
      mkdir -p "$out/metallb"
      run "$out/metallb/$name.log" "${k[@]}" -n metallb-system logs \
        -l app=metallb --all-containers --prefix --timestamps --tail=-1
      run "$out/metallb/$name.txt" "${k[@]}" -n metallb-system get \
        pods,daemonsets,deployments -o wide
    fi
  fi
done

envoys=$(docker ps --all --filter label=io.x-k8s.cloud-provider-kind.cluster \
  --format '{{.Names}}' 2>>"$log" || true)
for c in $envoys; do
  mkdir -p "$out/cloud-provider-kind"
  run_both "$out/cloud-provider-kind/$c.log" docker logs --timestamps "$c"
  run "$out/cloud-provider-kind/$c.json" docker inspect "$c"
done

echo "evidence in $out: $(echo "$clusters" | grep -c . || true) cluster(s), $(echo "$envoys" | grep -c . || true) envoy container(s)"
exit 0
