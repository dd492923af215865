//! The http action (in progress).
