// The web app and the SDK are embedded in the binary (src/webapp.rs): rebuild
// when any of their files changes, is added or is removed.
fn main() {
    println!("cargo:rerun-if-changed=../../clients/web");
    println!("cargo:rerun-if-changed=../../clients/js/src");
}
