#!/bin/sh
# Runs every test of mpbond: formatting, lints, unit and integration tests.
#
# Tests that build network namespaces need root; without it they print "SKIPPED ... needs root"
# and pass, so this script is useful (and green) as any user. CI runs it as root.
set -eu
cd "$(dirname "$0")/.."
. scripts/deps.sh
need_rust
# The lab needs iproute2; its tests also use ping and ethtool, and the decoder's tests capture
# the kernel's MPTCP with tcpdump and compare with tshark; the gateway's tests need nftables (the
# gateway installs its capture with `nft`) and curl (the LAN host's HTTP client).
# faketime moves a gateway's clock in the test of clock errors (the test skips that part without it).
need_packages iproute2:ip iputils-ping:ping ethtool:ethtool tcpdump:tcpdump tshark:tshark \
    nftables:nft curl:curl faketime:faketime

# Third-party conformance material (tcpdump's MPTCP captures, the upstream MPTCP packetdrill
# scripts) is not redistributed in the
# repository; the workplace keeps them in ../shared/conformance. Say whether they are there.
for c in "${MPBOND_CONFORMANCE:-}" ../shared/conformance /work/shared/conformance; do
    if [ -n "$c" ] && [ -d "$c/tcpdump-tests" ]; then
        MPBOND_CONFORMANCE=$(cd "$c" && pwd)
        export MPBOND_CONFORMANCE
        echo "conformance captures: $MPBOND_CONFORMANCE"
        break
    fi
done
[ -n "${MPBOND_CONFORMANCE:-}" ] || echo "note: conformance material not found; the tcpdump comparison and packetdrill tests will be skipped" >&2

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The gateway's tests again with gateway and converter on mpbond's own engine (`--stack user`);
# the mixed pairs ran above.
MPBOND_TEST_STACK=user cargo test -p mpbond --locked --test gateway -- \
    --skip mixed_data_planes --skip connect_with_wan_lines
