//! Panics of the `tokenizers` crate turned into errors.
//!
//! Design note: a `tokenizer.json` from the internet can drive `tokenizers`
//! into a panic (for example a `Strip` decoder whose `start`/`stop` exceed a
//! token's length slices out of range). [`contain`] runs such a call under
//! `catch_unwind` and returns the panic message as an error. So that the
//! contained panic prints nothing, a panic hook is installed once that
//! stays silent while the current thread is inside [`contain`] and passes
//! every other panic to the hook that was there before.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static CONTAINING: Cell<bool> = const { Cell::new(false) };
}

static QUIET_HOOK: Once = Once::new();

/// Runs `f`; a panic inside it becomes `Err(message)`.
pub(crate) fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINING.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = CONTAINING.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    CONTAINING.with(|c| c.set(outer));
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        format!("the tokenizers crate panicked: {message}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_and_values_pass_through() {
        assert_eq!(contain(|| 7), Ok(7));
        let err = contain(|| -> u8 { panic!("boom {}", 3) }).unwrap_err();
        assert!(err.contains("boom 3"), "{err}");
        // Nested and repeated uses keep working.
        assert_eq!(contain(|| contain(|| 1).unwrap() + 1), Ok(2));
    }
}
