//! [`StepTimes`]: where a generation's decode steps spent their time.

use std::time::Duration;

/// Time of the decode steps of a [`Generate`](super::Generate) run (every
/// token after the first; the first comes from the prefill), in three
/// parts, each summed over the steps:
///
/// - `build`: building the step's graph (the model's forward pass and the
///   sampler, as lazy MLX operations): host work only;
/// - `dispatch`: `async_eval` of the step: MLX encoding its operations for
///   the device, and any wait MLX itself imposes there. MLX 0.32 keeps at
///   most 10 tasks in flight; on its CPU backend every operation is a task,
///   so there `dispatch` holds nearly all the computing and `wait` little;
/// - `wait`: waiting for the token the previous step computes.
///
/// So `build` is host work for certain, `wait` the device's lead, and
/// `dispatch` either: a large `wait` says the device sets the pace; a
/// `build` near the whole step, the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepTimes {
    /// Decode steps timed.
    pub steps: u32,
    /// Time building the steps' graphs.
    pub build: Duration,
    /// Time handing them to MLX (`async_eval`).
    pub dispatch: Duration,
    /// Time waiting for their tokens.
    pub wait: Duration,
}

impl StepTimes {
    /// Mean time per step of one part (`build`, `dispatch` or `wait`), in
    /// seconds (0 with no steps).
    pub fn per_step(&self, part: Duration) -> f64 {
        match self.steps {
            0 => 0.0,
            n => part.as_secs_f64() / f64::from(n),
        }
    }
}
