//! Launch programs (issue 13): the plans of a training step recorded once as an
//! owned, replayable list of launches — buffers by device address, the program's own
//! scratch — and replayed every step. Recording happens at [`KernelDevice::execute`]:
//! while a device's [`Recorder`] is on, every plan it runs is also appended, so the
//! ops and the model code do not change. The values that change per step live in
//! device memory (the optimiser's step state, `backend::Hyper`), so the same
//! program is valid at every step; `sim` replays it launch by launch, `cuda` captures
//! it once as a CUDA graph.

use super::{Arg, KernelDevice, Launch, Plan};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A recorded program. It holds the device addresses of the buffers it was recorded
/// on: it is valid while they live at the same size (pruning reallocates the
/// branch buffers: re-record).
pub struct Program<B: 'static> {
    /// Every launch in order, each buffer argument an `Arg::Ptr`; no plan scratch.
    pub plan: Plan<'static, B>,
    /// The scratch buffers of the recorded plans, owned here (the launches point
    /// into them).
    _scratch: Vec<B>,
    id: u64,
}

impl<B: 'static> Program<B> {
    /// Kernel launches per replay.
    pub fn launches(&self) -> usize {
        self.plan.launches.len()
    }
    /// Unique per recording (a device caches its captured graph under it).
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// What a recording has gathered so far.
struct Recording<B: 'static> {
    launches: Vec<Launch<'static, B>>,
    scratch: Vec<B>,
}

/// A kernel device's recorder (see the module comment). Off unless recording.
pub struct Recorder<B: 'static> {
    on: Mutex<Option<Recording<B>>>,
}

impl<B: 'static> Default for Recorder<B> {
    fn default() -> Self {
        Self {
            on: Mutex::new(None),
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl<B: 'static> Recorder<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Recording<B>>> {
        self.on.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn start(&self) {
        let mut on = self.lock();
        assert!(on.is_none(), "a launch program is already being recorded");
        *on = Some(Recording {
            launches: Vec::new(),
            scratch: Vec::new(),
        });
    }

    pub fn finish(&self) -> Program<B> {
        let r = self.lock().take().expect("finish without start");
        Program {
            plan: Plan {
                scratch: Vec::new(),
                launches: r.launches,
            },
            _scratch: r.scratch,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// While recording: appends `plan`'s launches with owned arguments — buffers as
    /// their device addresses, the plan's scratch as new buffers of the program.
    pub fn append<D: KernelDevice<Buf = B> + ?Sized>(&self, device: &D, plan: &Plan<'_, B>) {
        let mut on = self.lock();
        let Some(r) = on.as_mut() else {
            return;
        };
        let base = r.scratch.len();
        r.scratch
            .extend(plan.scratch.iter().map(|&len| device.zeros(len)));
        let ptr = |b: &B| Arg::Ptr {
            addr: device.address(b),
            len: device.buf_len(b),
        };
        for l in &plan.launches {
            let args = l
                .args
                .iter()
                .map(|a| match a {
                    Arg::Buf(b) => ptr(b),
                    Arg::Scratch(i) => ptr(&r.scratch[base + i]),
                    Arg::Ptr { addr, len } => Arg::Ptr {
                        addr: *addr,
                        len: *len,
                    },
                    Arg::I32(v) => Arg::I32(*v),
                    Arg::F32(v) => Arg::F32(*v),
                    Arg::Bytes(b) => Arg::Bytes(b.clone()),
                    Arg::Table { bytes, bufs } => Arg::Table {
                        bytes: bytes.clone(),
                        bufs: bufs.clone(),
                    },
                })
                .collect();
            r.launches.push(Launch {
                kernel: l.kernel,
                grid: l.grid,
                block: l.block,
                shared_bytes: l.shared_bytes,
                args,
            });
        }
    }
}
