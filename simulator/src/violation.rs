//! What a broken property is, as a value: the one type the world, the checkers, the scenarios
//! and the runner all hand around.
//!
//! It lives in a module of its own, importing nothing from the crate, so that the world can
//! record what it finds broken on the way (property 2 at each sync, property 4 at each start)
//! without depending on the checkers (`crate::checks`), which observe the world from outside
//! and so depend on it.

/// A broken property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub property: &'static str,
    pub details: String,
}

impl Violation {
    pub fn new(property: &'static str, details: String) -> Violation {
        Violation { property, details }
    }
}
