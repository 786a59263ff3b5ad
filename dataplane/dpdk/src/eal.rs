//! EAL initialization and cleanup.
//!
//! DPDK keeps its state in process globals, so [`Eal`] is a token: one per
//! process, created by [`Eal::init`]. Mempools and ports borrow it, which
//! makes the compiler drop them before `rte_eal_cleanup` runs.

use std::ffi::{c_char, c_int, CString};
use std::sync::Mutex;

use spike_dpdk_sys as sys;

use crate::error::{rte_errno, strerror, DpdkError};

/// Lifecycle of the process-wide EAL. DPDK rejects a second `rte_eal_init`
/// after a successful one, including after `rte_eal_cleanup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EalState {
    Uninitialized,
    Running,
    CleanedUp,
}

static EAL_STATE: Mutex<EalState> = Mutex::new(EalState::Uninitialized);

/// The initialized DPDK environment of this process.
///
/// Dropping it calls `rte_eal_cleanup`; use [`Eal::cleanup`] to see the
/// result.
#[derive(Debug)]
pub struct Eal {
    // Keeps construction inside this module.
    _private: (),
}

impl Eal {
    /// Initializes the EAL with C-style arguments: `args[0]` is the program
    /// name and the rest are EAL options such as `-l 0-1 --vdev net_null0`.
    ///
    /// # Errors
    ///
    /// [`DpdkError::EalAlreadyInitialized`] if the EAL already ran in this
    /// process, [`DpdkError::NulInArgument`] for an argument with a NUL
    /// byte, and [`DpdkError::EalInit`] with the `rte_errno` text when
    /// DPDK rejects the arguments or the environment.
    ///
    /// NOTE: DPDK 22.11 returns an error for invalid options, but a few
    /// failures deep in driver probing call `rte_panic`, which aborts.
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        // A poisoned lock only means another init panicked; the state value
        // itself is always valid.
        let mut state = EAL_STATE
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if *state != EalState::Uninitialized {
            return Err(DpdkError::EalAlreadyInitialized);
        }

        let argv = leak_argv(args)?;
        let argc = c_int::try_from(args.len()).expect("argument count fits in a C int");

        // SAFETY: argv points to argc valid NUL-terminated strings followed
        // by a NULL entry, all leaked, so they outlive the process-wide EAL
        // that may keep pointers into them. DPDK may reorder the array,
        // which nothing else reads. The state lock makes this the only
        // rte_eal_init call in flight in this process.
        let ret = unsafe { sys::rte_eal_init(argc, argv) };
        if ret < 0 {
            let errno = rte_errno();
            // Some failures (a locked shared config, say) leave rte_errno at 0, whose
            // text "Success" would mislead; the cause is then only in EAL's own log.
            let reason = if errno == 0 {
                "see the EAL messages above for the cause".to_owned()
            } else {
                strerror(errno)
            };
            return Err(DpdkError::EalInit {
                args: args.to_vec(),
                errno,
                reason,
            });
        }

        *state = EalState::Running;
        Ok(Eal { _private: () })
    }

    /// Calls `rte_eal_cleanup`. After it no DPDK call may be made, and the
    /// EAL cannot be initialized again in this process.
    ///
    /// # Errors
    ///
    /// [`DpdkError::Call`] with the code that `rte_eal_cleanup` returned.
    pub fn cleanup(mut self) -> Result<(), DpdkError> {
        self.cleanup_once()
    }

    fn cleanup_once(&mut self) -> Result<(), DpdkError> {
        let mut state = EAL_STATE
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if *state != EalState::Running {
            return Ok(());
        }
        *state = EalState::CleanedUp;

        // SAFETY: the EAL is running, and every object that calls into DPDK
        // (Mempool, Mbuf, Port, lcore scopes) borrows this Eal, so none is
        // alive when it is consumed or dropped. The state update above
        // keeps the call to one per process.
        let ret = unsafe { sys::rte_eal_cleanup() };
        if ret < 0 {
            return Err(DpdkError::call("rte_eal_cleanup", "the EAL", ret));
        }
        Ok(())
    }

    /// Returns the TSC frequency in Hz that the EAL measured at init.
    pub fn tsc_hz(&self) -> u64 {
        // SAFETY: reads a value that rte_eal_init set; the EAL is running.
        unsafe { sys::rte_get_tsc_hz() }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        if let Err(error) = self.cleanup_once() {
            tracing::warn!(%error, "EAL cleanup failed");
        }
    }
}

/// Copies `args` into C strings and a NULL-terminated pointer array that
/// are deliberately leaked: DPDK may keep pointers into argv (for example
/// to the program name) for the life of the process.
fn leak_argv(args: &[String]) -> Result<*mut *mut c_char, DpdkError> {
    let mut pointers = Vec::with_capacity(args.len() + 1);
    for arg in args {
        let c_arg = CString::new(arg.as_str()).map_err(|_| DpdkError::NulInArgument {
            what: "EAL argument",
            value: arg.clone(),
        })?;
        pointers.push(c_arg.into_raw());
    }
    pointers.push(std::ptr::null_mut());

    Ok(Box::leak(pointers.into_boxed_slice()).as_mut_ptr())
}
