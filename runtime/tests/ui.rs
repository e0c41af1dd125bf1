//! Compile errors of `#[derive(ApiResource)]`, pinned: each says what is wrong and how to fix it.

#[test]
fn derive_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
