//! Finds DPDK through pkg-config, generates bindings for the allowlisted API
//! and compiles the C shim for DPDK's static inline fast path.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Debian packages that provide DPDK's headers, libraries, pkg-config file
/// and the libclang that bindgen loads.
const APT_PACKAGES: &str = "dpdk dpdk-dev libdpdk-dev pkg-config clang libclang-dev";

/// Oldest DPDK whose API the bindings and the shim are written against.
const MIN_DPDK_VERSION: &str = "22.11";

/// Oldest Rust the generated code must compile on: the workspace's
/// `rust-version`. Without it bindgen targets the newest Rust it supports and
/// emits `unsafe extern` blocks, which need 1.82.
const RUST_TARGET_MINOR: u64 = 80;

/// Exported DPDK functions that the safe layer calls directly.
const FUNCTIONS: &[&str] = &[
    "rte_eal_init",
    "rte_eal_cleanup",
    "rte_strerror",
    "rte_socket_id",
    "rte_get_tsc_hz",
    "rte_eal_remote_launch",
    "rte_eal_wait_lcore",
    "rte_eal_mp_wait_lcore",
    "rte_get_next_lcore",
    "rte_get_main_lcore",
    "rte_lcore_count",
    "rte_pktmbuf_pool_create",
    "rte_pktmbuf_free_bulk",
    "rte_mempool_free",
    "rte_mempool_avail_count",
    "rte_mempool_in_use_count",
    "rte_eth_dev_count_avail",
    "rte_eth_dev_is_valid_port",
    "rte_eth_dev_get_port_by_name",
    "rte_eth_dev_get_name_by_port",
    "rte_eth_dev_socket_id",
    "rte_eth_dev_info_get",
    "rte_eth_dev_configure",
    "rte_eth_rx_queue_setup",
    "rte_eth_tx_queue_setup",
    "rte_eth_dev_start",
    "rte_eth_dev_stop",
    "rte_eth_dev_close",
    "rte_eth_promiscuous_enable",
    "rte_eth_macaddr_get",
    "rte_eth_dev_get_mtu",
    "rte_eth_link_get_nowait",
    "rte_eth_stats_get",
    "rte_ring_create",
    "rte_ring_free",
    // The shim, see wrapper.h.
    "spike_.*",
];

/// Types used by value in the functions above, and `rte_mbuf`, whose fields
/// the fast path reads from Rust. Their field types are pulled in recursively.
const TYPES: &[&str] = &[
    "rte_mbuf",
    "rte_eth_conf",
    "rte_eth_dev_info",
    "rte_eth_stats",
    "rte_eth_link",
    "rte_ether_addr",
    "rte_eth_rxconf",
    "rte_eth_txconf",
    "lcore_function_t",
];

/// Types that Rust only handles through pointers. Keeping them opaque keeps
/// the mempool and ring internals (per-lcore caches, head and tail words) out
/// of the bindings.
const OPAQUE_TYPES: &[&str] = &["rte_mempool", "rte_ring"];

/// Object-like macros and enum constants. clang evaluates the ones that are
/// built from function-like macros such as RTE_BIT64.
const VARS: &[&str] = &[
    "RTE_MAX_ETHPORTS",
    "RTE_MAX_LCORE",
    "RTE_ETH_NAME_MAX_LEN",
    "RTE_PKTMBUF_HEADROOM",
    "RTE_MBUF_DEFAULT_BUF_SIZE",
    "SOCKET_ID_ANY",
    "LCORE_ID_ANY",
    "RTE_ETH_MQ_RX_NONE",
    "RTE_ETH_MQ_RX_RSS",
    "RTE_ETH_RSS_IP",
    "RTE_ETH_RSS_TCP",
    "RTE_ETH_RSS_UDP",
    "RTE_ETH_LINK_UP",
    "RTE_ETH_LINK_FULL_DUPLEX",
    "RTE_ETH_TX_OFFLOAD_IPV4_CKSUM",
    "RTE_ETH_TX_OFFLOAD_TCP_CKSUM",
    "RTE_ETH_TX_OFFLOAD_UDP_CKSUM",
    "RTE_MBUF_F_TX_IPV4",
    "RTE_MBUF_F_TX_IPV6",
    "RTE_MBUF_F_TX_IP_CKSUM",
    "RTE_MBUF_F_TX_TCP_CKSUM",
    "RTE_MBUF_F_TX_UDP_CKSUM",
    "RING_F_SC_DEQ",
    "RING_F_EXACT_SZ",
];

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-env-changed=DOCS_RS");

    if env::var_os("DOCS_RS").is_some() {
        panic!(
            "spike-dpdk-sys needs an installed DPDK {MIN_DPDK_VERSION} or newer to build, \
             and docs.rs has none"
        );
    }

    let library = probe_dpdk();
    let cflags = dpdk_cflags();

    generate_bindings(&cflags);
    compile_shim(&cflags, &library);
}

/// Emits the link flags for shared DPDK libraries. Shared linking is the
/// default because Debian's shared build loads every PMD from its plugin
/// directory at `rte_eal_init`, so no driver has to be linked by name.
fn probe_dpdk() -> pkg_config::Library {
    match pkg_config::Config::new()
        .atleast_version(MIN_DPDK_VERSION)
        .probe("libdpdk")
    {
        Ok(library) => library,
        Err(error) => panic!(
            "DPDK {MIN_DPDK_VERSION} or newer was not found through pkg-config; on Debian or \
             Ubuntu install it with: apt-get install -y {APT_PACKAGES}\n{error}"
        ),
    }
}

/// Returns every token of `pkg-config --cflags libdpdk`. The pkg-config
/// crate keeps only include paths and defines, but DPDK's headers also need
/// `-include rte_config.h` and the `-march` they were built for.
fn dpdk_cflags() -> Vec<String> {
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_owned());
    let output = Command::new(&pkg_config)
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|error| {
            panic!("failed to run {pkg_config} --cflags libdpdk: {error}; install: {APT_PACKAGES}")
        });
    if !output.status.success() {
        panic!(
            "{pkg_config} --cflags libdpdk failed: {}; install: {APT_PACKAGES}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }

    // NOTE: splits on whitespace, which is enough for DPDK's .pc file but
    // not for paths that contain spaces.
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn generate_bindings(cflags: &[String]) {
    let rust_target = bindgen::RustTarget::stable(RUST_TARGET_MINOR, 0)
        .expect("bindgen supports the workspace's minimum Rust version");
    let mut builder = bindgen::Builder::default()
        .rust_target(rust_target)
        .header("wrapper.h")
        // DPDK's Doxygen text contains indented examples that rustdoc
        // would run as Rust doctests; the DPDK API reference covers it.
        .generate_comments(false)
        .clang_args(cflags)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(true)
        .clang_macro_fallback()
        .allowlist_recursively(true);

    for function in FUNCTIONS {
        builder = builder.allowlist_function(function);
    }
    for type_name in TYPES {
        builder = builder.allowlist_type(type_name);
    }
    for type_name in OPAQUE_TYPES {
        // bindgen still emits an opaque struct's anonymous members unless
        // they are blocked by name.
        builder = builder
            .opaque_type(type_name)
            .blocklist_type(format!("{type_name}__.*"));
    }
    for var in VARS {
        builder = builder.allowlist_var(var);
    }

    let bindings = builder.generate().unwrap_or_else(|error| {
        panic!(
            "bindgen failed on wrapper.h ({error}); it needs libclang and the DPDK headers: \
             apt-get install -y {APT_PACKAGES}"
        )
    });

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out_dir.join("bindings.rs"))
        .expect("failed to write bindings.rs to OUT_DIR");
}

fn compile_shim(cflags: &[String], library: &pkg_config::Library) {
    let mut build = cc::Build::new();
    build.file("src/shim.c").warnings(true).extra_warnings(true);

    for flag in cflags {
        build.flag(flag);
    }
    for path in &library.include_paths {
        build.include(path);
    }

    build.compile("spike_dpdk_shim");
}
