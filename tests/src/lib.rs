//! End-to-end tests live in `all/`; this library is empty.
