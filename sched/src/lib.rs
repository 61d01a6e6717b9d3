//! Background scheduling for deferrable work (shipping and ingesting clicks).
//!
//! On a small machine such work shares the cores with the redirect threads, and a
//! millisecond of it in one go queues every redirect that wakes on its core behind it: the
//! kernel lets a running normal-class thread finish its slice first. A thread in the
//! kernel's idle class (`SCHED_IDLE`) gives the core up the moment a normal thread wakes,
//! so the same work fills only the gaps between redirects. Measured on two cores at half
//! the peak rate (load harness, median of 7 runs): redirect p99 0.88 ms with the click
//! pipeline in the normal class, 0.33 ms with its shipper and store writer idle-class
//! (BENCHMARKS.md).
//!
//! The idle class can starve: on a saturated machine it gets next to no time. So a
//! [`Background`] thread returns to the normal class whenever it notices it is behind,
//! and goes back to idle once it has caught up. Leaving the idle class needs
//! `CAP_SYS_NICE` (or `RLIMIT_NICE` of 20); where the process cannot leave it, it is never
//! entered ([`idle_class_permitted`]), so nothing depends on the gaps alone.

use std::sync::OnceLock;

/// One thread's scheduling class for deferrable work: create it on the thread it governs.
#[derive(Debug)]
pub struct Background {
    /// Whether this thread may use the idle class at all (asked for and permitted).
    enabled: bool,
    /// Whether the thread is in the idle class now.
    idle: bool,
}

impl Background {
    /// The calling thread, still in the normal class; `wanted` false (a setting) or a
    /// process that could not leave the idle class again keeps it there for good.
    pub fn new(wanted: bool) -> Background {
        Background {
            enabled: wanted && idle_class_permitted(),
            idle: false,
        }
    }

    /// Keeping up: the thread runs in the idle class (when enabled).
    pub fn idle(&mut self) {
        if self.enabled && !self.idle {
            self.idle = os::set_idle(true).is_ok();
        }
    }

    /// Behind (or about to do work something waits for): the normal class.
    pub fn normal(&mut self) {
        if self.idle {
            // Permitted by the check in `new`; should it fail anyway, stop using the idle
            // class rather than stay in it.
            if os::set_idle(false).is_err() {
                self.enabled = false;
                return;
            }
            self.idle = false;
        }
    }

    /// Whether the thread is in the idle class now.
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// Whether this thread will use the idle class while it keeps up.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
}

impl Drop for Background {
    /// The thread leaves in the normal class: whatever it runs next is not deferrable.
    fn drop(&mut self) {
        self.normal();
    }
}

/// Whether a thread of this process can enter the idle class and leave it again (checked
/// once, on a thread of its own).
pub fn idle_class_permitted() -> bool {
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    *PERMITTED.get_or_init(|| {
        std::thread::Builder::new()
            .name("sched-probe".into())
            .spawn(|| os::set_idle(true).is_ok() && os::set_idle(false).is_ok())
            .ok()
            .and_then(|probe| probe.join().ok())
            .unwrap_or(false)
    })
}

/// Whether the calling thread is in the idle class (for tests and diagnostics).
pub fn current_thread_is_idle() -> bool {
    os::is_idle()
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod os {
    /// Moves the calling thread into (`true`) or out of (`false`) the idle class; its nice
    /// value is kept.
    pub(super) fn set_idle(idle: bool) -> std::io::Result<()> {
        let policy = if idle {
            libc::SCHED_IDLE
        } else {
            libc::SCHED_OTHER
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param that outlives the call; pid 0 is the
        // calling thread. The call reads `param` and changes nothing else in this process.
        let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    pub(super) fn is_idle() -> bool {
        // SAFETY: no arguments but the calling thread's id (0); only reads its policy.
        let policy = unsafe { libc::sched_getscheduler(0) };
        policy == libc::SCHED_IDLE
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    pub(super) fn set_idle(_idle: bool) -> std::io::Result<()> {
        Err(std::io::Error::other(
            "the idle scheduling class is Linux's",
        ))
    }

    pub(super) fn is_idle() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread of its own, so a test's class changes stay there.
    fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().unwrap()
    }

    #[test]
    fn moves_between_the_idle_and_the_normal_class() {
        // The test script runs as root (CI does): the idle class must be usable there.
        // Elsewhere, without CAP_SYS_NICE, it must never be entered.
        let permitted = idle_class_permitted();
        let root = std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false);
        if root {
            assert!(permitted, "root could not leave the idle class again");
        }
        let seen = on_thread(move || {
            let mut bg = Background::new(true);
            let mut seen = vec![(bg.is_idle(), current_thread_is_idle())];
            bg.idle();
            seen.push((bg.is_idle(), current_thread_is_idle()));
            bg.idle(); // twice is once
            seen.push((bg.is_idle(), current_thread_is_idle()));
            bg.normal();
            seen.push((bg.is_idle(), current_thread_is_idle()));
            bg.idle();
            drop(bg);
            seen.push((false, current_thread_is_idle()));
            seen
        });
        let idle = permitted;
        assert_eq!(
            seen,
            vec![
                (false, false),
                (idle, idle),
                (idle, idle),
                (false, false),
                (false, false), // dropped: back in the normal class
            ]
        );
    }

    #[test]
    fn a_thread_not_wanting_the_idle_class_never_enters_it() {
        let stayed_normal = on_thread(|| {
            let mut bg = Background::new(false);
            bg.idle();
            !bg.is_idle() && !current_thread_is_idle() && !bg.is_enabled()
        });
        assert!(stayed_normal);
    }
}
