# Shell side of the lab, sourced by scripts/demo.sh and tests/live/run.sh.
#
# lab_run PREFIX SCRIPT ARGS... runs a Python entry point of the lab with --prefix PREFIX
# and makes sure that no namespace of PREFIX outlives the script. On SIGINT or SIGTERM it
# sends SIGTERM to the Python process and waits for it to clean up. On any exit it then
# removes whatever namespace of PREFIX is left, with the processes inside.

lab_prefix=""
lab_python_pid=""

# Kills every process inside the namespaces named PREFIX*, by PID, and deletes them.
lab_remove_leftovers() {
    [ -n "$lab_prefix" ] || return 0
    local namespace pid namespaces
    namespaces=$(ip netns list | awk -v prefix="$lab_prefix" 'index($1, prefix) == 1 { print $1 }')
    for namespace in $namespaces; do
        for pid in $(ip netns pids "$namespace" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        ip netns del "$namespace" 2>/dev/null || true
        echo "removed leftover namespace $namespace" >&2
    done
}

lab_on_signal() {
    trap - INT TERM
    if [ -n "$lab_python_pid" ]; then
        kill -TERM "$lab_python_pid" 2>/dev/null || true
        wait "$lab_python_pid" 2>/dev/null || true
    fi
    lab_remove_leftovers
    exit 130
}

lab_run() {
    lab_prefix=$1
    shift
    trap lab_on_signal INT TERM
    trap lab_remove_leftovers EXIT
    # In the background, so that the traps run while Python works: bash defers a trap
    # until its foreground command ends. Python ignores SIGINT there (bash starts
    # background jobs so), and the SIGINT trap sends it SIGTERM instead.
    python3 "$@" --prefix "$lab_prefix" &
    lab_python_pid=$!
    local status=0
    wait "$lab_python_pid" || status=$?
    lab_python_pid=""
    return "$status"
}
