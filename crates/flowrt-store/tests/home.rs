//! `flowrt_home()` reads the environment; kept in its own test binary so no other test races it.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use std::path::PathBuf;

#[test]
fn flowrt_home_prefers_env_then_home() {
    // SAFETY: this test binary has a single test, so nothing else reads the environment meanwhile.
    unsafe {
        std::env::set_var("FLOWRT_HOME", "/tmp/fh-test");
        std::env::set_var("HOME", "/home/someone");
    }
    assert_eq!(flowrt_store::flowrt_home(), PathBuf::from("/tmp/fh-test"));
    unsafe {
        std::env::set_var("FLOWRT_HOME", "");
    }
    assert_eq!(
        flowrt_store::flowrt_home(),
        PathBuf::from("/home/someone/.flowrt")
    );
    unsafe {
        std::env::remove_var("FLOWRT_HOME");
    }
    assert_eq!(
        flowrt_store::flowrt_home(),
        PathBuf::from("/home/someone/.flowrt")
    );
}
