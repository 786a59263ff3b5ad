//! Errors of the control-plane calls. The packet path never builds one,
//! because a `DpdkError` may allocate.

use std::ffi::{c_int, CStr};

use spike_dpdk_sys as sys;

/// A failed DPDK call, with the value it was called on and the errno text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpdkError {
    /// `rte_eal_init` returned -1.
    #[error("rte_eal_init failed with arguments {args:?}: {reason} (rte_errno {errno})")]
    EalInit {
        args: Vec<String>,
        errno: i32,
        reason: String,
    },

    /// DPDK allows one `rte_eal_init` per process, even after `rte_eal_cleanup`.
    #[error("rte_eal_init already ran in this process; run each EAL user in its own process")]
    EalAlreadyInitialized,

    /// An argument contains a NUL byte, so it cannot become a C string.
    #[error("invalid {what} {value:?}: contains a NUL byte")]
    NulInArgument { what: &'static str, value: String },

    /// A DPDK call returned an error code or a NULL pointer.
    #[error("{call} failed for {subject}: {reason} (errno {errno})")]
    Call {
        call: &'static str,
        subject: String,
        errno: i32,
        reason: String,
    },

    /// No ethdev port has this name.
    #[error("no DPDK port named {name:?}; check the --vdev or PCI allow-list arguments")]
    PortNotFound { name: String },

    /// No ethdev port has this id.
    #[error(
        "port id {port_id} is not a valid DPDK port; Port::count_avail returns how many exist"
    )]
    InvalidPort { port_id: u16 },

    /// Each port has one owning `Port` value, so close runs once.
    #[error("port {port_id} is already open in this process")]
    PortInUse { port_id: u16 },

    /// `start` requires every configured queue to have been set up.
    #[error("port {port_id} has {direction} queue {queue} configured but not set up")]
    QueueNotSetUp {
        port_id: u16,
        direction: &'static str,
        queue: u16,
    },

    /// The queue index is not below the count given to `configure`.
    #[error(
        "port {port_id} has {configured} {direction} queues, so queue {queue} is out of range"
    )]
    QueueOutOfRange {
        port_id: u16,
        direction: &'static str,
        queue: u16,
        configured: u16,
    },

    /// Queue handles exist only while the port runs.
    #[error("port {port_id} is not started")]
    PortNotStarted { port_id: u16 },

    /// Only the main lcore may launch work on other lcores.
    #[error(
        "lcore launch must run on the main lcore {main}, but this thread is lcore {current:?}"
    )]
    NotMainLcore { main: u32, current: Option<u32> },

    /// The lcore is not an enabled worker lcore of this EAL.
    #[error("lcore {lcore_id} is not a worker lcore; pass it in the EAL -l list")]
    NotWorkerLcore { lcore_id: u32 },
}

impl DpdkError {
    /// Builds a `Call` error from an errno value, positive or negated.
    pub(crate) fn call(call: &'static str, subject: impl ToString, errno: c_int) -> Self {
        let errno = errno.saturating_abs();
        Self::Call {
            call,
            subject: subject.to_string(),
            errno,
            reason: strerror(errno),
        }
    }

    /// Builds a `Call` error from the calling thread's `rte_errno`.
    pub(crate) fn from_rte_errno(call: &'static str, subject: impl ToString) -> Self {
        Self::call(call, subject, rte_errno())
    }
}

/// Returns the calling thread's `rte_errno`.
pub fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local int; valid on any thread, with or without
    // an initialized EAL.
    unsafe { sys::spike_errno() }
}

/// Returns DPDK's text for an errno value, which covers the DPDK-specific
/// codes above `__ELASTERROR` as well as the libc ones.
pub fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror accepts any int and returns either a static
    // string or a thread-local buffer, both NUL terminated. The text is
    // copied before this thread can call rte_strerror again.
    unsafe {
        let text = sys::rte_strerror(errno);
        if text.is_null() {
            return format!("unknown error {errno}");
        }
        CStr::from_ptr(text).to_string_lossy().into_owned()
    }
}
