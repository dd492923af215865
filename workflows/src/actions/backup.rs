//! The backup action (in progress).
