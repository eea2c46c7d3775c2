//! tokio driver (next commit).
