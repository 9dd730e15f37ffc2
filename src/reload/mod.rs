//! Hot reload: build a new snapshot off the request path, carry every surviving backend's
//! state over, swap it in with one store, and report what changed.

pub mod watch;
