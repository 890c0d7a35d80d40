//! Fleetlog's projections: the subscription runtime, projectors (pure folds into read models) and
//! reactors (which turn events and the passage of time into new events).
//!
//! # Layout
//!
//! Nothing here yet: the runtime builds on the event store's
//! [`EventTail`](command_side::event_store::EventTail), which follows the log in its one global order.

pub use command_side::event_store::EventTail;
