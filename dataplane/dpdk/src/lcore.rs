//! Logical cores (lcores): ids, TSC helpers and launching closures on
//! worker lcores.
//!
//! Launching is scoped, like `std::thread::scope`: [`Eal::scope`] waits for
//! every lcore it launched before it returns, also when it unwinds, so the
//! closures may borrow ports, queues and mempools from the caller.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};

use spike_dpdk_sys as sys;

use crate::eal::Eal;
use crate::error::DpdkError;

/// Exit code that [`LcoreScope::wait_all_lcores`] reports for a worker
/// closure that panicked. The panic message goes to the panic hook first.
pub const LCORE_PANICKED: i32 = i32::MIN;

/// Returns the lcore id of the calling thread, or `None` for a thread that
/// the EAL did not create or register.
pub fn lcore_id() -> Option<u32> {
    // SAFETY: reads a thread-local variable; valid on any thread.
    let id = unsafe { sys::spike_lcore_id() };
    (id != sys::LCORE_ID_ANY).then_some(id)
}

/// Returns the time stamp counter, in cycles of [`Eal::tsc_hz`].
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: executes rdtsc, which has no memory effects.
    unsafe { sys::spike_rdtsc() }
}

/// Hints the CPU that the caller is spinning (the x86 `pause` instruction).
#[inline]
pub fn pause() {
    // SAFETY: executes pause, which has no memory effects.
    unsafe { sys::spike_pause() }
}

impl Eal {
    /// Returns the id of the main lcore, the one that ran `rte_eal_init`.
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: reads the lcore configuration that rte_eal_init built.
        unsafe { sys::rte_get_main_lcore() }
    }

    /// Returns the number of enabled lcores, the main one included.
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: reads the lcore configuration that rte_eal_init built.
        unsafe { sys::rte_lcore_count() }
    }

    /// Iterates over the enabled worker lcore ids in increasing order.
    pub fn worker_lcores(&self) -> WorkerLcores<'_> {
        WorkerLcores {
            // rte_get_next_lcore starts from the id after this one, so
            // u32::MAX (C's -1) starts the walk at lcore 0.
            previous: u32::MAX,
            _eal: PhantomData,
        }
    }

    /// Runs `f` with a scope in which closures can be launched on worker
    /// lcores, then waits for all of them.
    ///
    /// # Errors
    ///
    /// [`DpdkError::NotMainLcore`] if the calling thread is not the main
    /// lcore, because DPDK only launches from there.
    pub fn scope<'env, F, R>(&'env self, f: F) -> Result<R, DpdkError>
    where
        F: for<'scope> FnOnce(&'scope LcoreScope<'scope, 'env>) -> R,
    {
        let main = self.main_lcore();
        let current = lcore_id();
        if current != Some(main) {
            return Err(DpdkError::NotMainLcore { main, current });
        }

        let scope = LcoreScope {
            eal: self,
            launched: RefCell::new(Vec::new()),
            _scope: PhantomData,
            _env: PhantomData,
        };
        let guard = WaitOnDrop(&scope);
        let result = f(&scope);
        drop(guard);
        Ok(result)
    }
}

/// Iterator over worker lcore ids, from [`Eal::worker_lcores`].
#[derive(Debug)]
pub struct WorkerLcores<'eal> {
    previous: u32,
    _eal: PhantomData<&'eal Eal>,
}

impl Iterator for WorkerLcores<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        // SAFETY: reads the lcore configuration that rte_eal_init built;
        // the Eal borrow keeps it alive. Any start id is accepted.
        let next = unsafe { sys::rte_get_next_lcore(self.previous, 1, 0) };
        if next >= sys::RTE_MAX_LCORE {
            return None;
        }
        self.previous = next;
        Some(next)
    }
}

/// A scope for launching closures on worker lcores, from [`Eal::scope`].
///
/// It is neither `Send` nor `Sync`, so launches stay on the main lcore.
#[derive(Debug)]
pub struct LcoreScope<'scope, 'env: 'scope> {
    eal: &'env Eal,
    /// Lcores launched and not yet waited for.
    launched: RefCell<Vec<u32>>,
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

/// A launched closure, boxed twice so that a thin pointer can pass through
/// DPDK's `void *` argument.
type Job<'scope> = Box<dyn FnOnce() -> i32 + Send + 'scope>;

impl<'scope> LcoreScope<'scope, '_> {
    /// Starts `f` on worker lcore `lcore_id` with `rte_eal_remote_launch`.
    /// The closure is boxed once here; its return value is the lcore's
    /// exit code.
    ///
    /// # Errors
    ///
    /// [`DpdkError::NotWorkerLcore`] if `lcore_id` is not an enabled worker,
    /// and [`DpdkError::Call`] if DPDK rejects the launch, for example with
    /// EBUSY while the lcore still runs an earlier closure.
    pub fn launch_on_lcore<F>(&'scope self, lcore_id: u32, f: F) -> Result<(), DpdkError>
    where
        F: FnOnce() -> i32 + Send + 'scope,
    {
        if !self.eal.worker_lcores().any(|id| id == lcore_id) {
            return Err(DpdkError::NotWorkerLcore { lcore_id });
        }

        let job: Box<Job<'scope>> = Box::new(Box::new(f));
        let arg = Box::into_raw(job).cast::<c_void>();

        // SAFETY: this thread is the main lcore (checked by Eal::scope, and
        // the scope cannot leave the thread), lcore_id is an enabled worker,
        // and arg is a leaked Box<Job> that run_job takes back exactly
        // once. The closure may borrow data for 'scope only, and the scope
        // waits for this lcore before 'scope ends.
        let ret = unsafe { sys::rte_eal_remote_launch(Some(run_job), arg, lcore_id) };
        if ret < 0 {
            // SAFETY: DPDK did not start the job, so arg is still the only
            // pointer to the Box<Job> created above.
            drop(unsafe { Box::from_raw(arg.cast::<Job<'scope>>()) });
            return Err(DpdkError::call(
                "rte_eal_remote_launch",
                format!("lcore {lcore_id}"),
                ret,
            ));
        }

        self.launched.borrow_mut().push(lcore_id);
        Ok(())
    }

    /// Waits for every lcore launched in this scope and returns each
    /// lcore id with the closure's exit code, in launch order.
    pub fn wait_all_lcores(&self) -> Vec<(u32, i32)> {
        let launched = std::mem::take(&mut *self.launched.borrow_mut());
        launched
            .into_iter()
            .map(|lcore_id| {
                // SAFETY: called on the main lcore for an enabled worker
                // lcore; it blocks until that lcore is idle again.
                let code = unsafe { sys::rte_eal_wait_lcore(lcore_id) };
                (lcore_id, code)
            })
            .collect()
    }
}

/// Waits for the scope's lcores when `Eal::scope` returns or unwinds, so no
/// closure outlives the data it borrows.
struct WaitOnDrop<'a, 'scope, 'env>(&'a LcoreScope<'scope, 'env>);

impl Drop for WaitOnDrop<'_, '_, '_> {
    fn drop(&mut self) {
        for (lcore_id, code) in self.0.wait_all_lcores() {
            if code == LCORE_PANICKED {
                tracing::error!(lcore_id, "worker lcore closure panicked");
            }
        }
    }
}

/// Entry point that DPDK calls on the worker lcore.
unsafe extern "C" fn run_job(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the pointer that launch_on_lcore leaked from a
    // Box<Job>, and DPDK passes it to exactly one call of this function.
    // The 'static here only names the type; the scope waits for this lcore
    // before the real lifetime ends.
    let job = unsafe { Box::from_raw(arg.cast::<Job<'static>>()) };

    // Unwinding into DPDK's C frames would abort the process, so a panic
    // becomes an exit code.
    panic::catch_unwind(AssertUnwindSafe(*job)).unwrap_or(LCORE_PANICKED)
}
