//! Finds the installed httpd and APR headers, generates the raw bindings with
//! bindgen and compiles the small C shim (only what bindgen cannot express).
//!
//! Overrides for other layouts: `APXS` (path of apxs), `HTTPD_INCLUDEDIR`,
//! `APR_INCLUDES` (compiler flags, e.g. `-I/opt/apr/include`).

use std::env;
use std::path::PathBuf;
use std::process::Command;

const MISSING: &str = "mpm-itk build: httpd development files not found; install them: \
Debian/Ubuntu `apt-get install apache2-dev libclang-dev`, RHEL/Alma/Rocky `dnf install httpd-devel apr-devel clang-devel`";

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn fail(msg: &str) -> ! {
    // One line, naming the packages: cargo shows it as the build error.
    eprintln!("{msg}");
    println!("cargo::error={msg}");
    std::process::exit(1);
}

fn apxs() -> Option<String> {
    if let Ok(p) = env::var("APXS") {
        return Some(p);
    }
    [
        "apxs",
        "apxs2",
        "/usr/bin/apxs",
        "/usr/bin/apxs2",
        "/usr/sbin/apxs",
    ]
    .iter()
    .find(|c| run(c, &["-q", "INCLUDEDIR"]).is_some())
    .map(|c| c.to_string())
}

fn main() {
    for v in ["APXS", "HTTPD_INCLUDEDIR", "APR_INCLUDES"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    println!("cargo:rerun-if-changed=src/sys/wrapper.h");
    println!("cargo:rerun-if-changed=src/sys/shim.c");

    let httpd_inc = match env::var("HTTPD_INCLUDEDIR") {
        Ok(d) => d,
        Err(_) => {
            let apxs = apxs().unwrap_or_else(|| fail(MISSING));
            run(&apxs, &["-q", "INCLUDEDIR"]).unwrap_or_else(|| fail(MISSING))
        }
    };
    if !PathBuf::from(&httpd_inc).join("httpd.h").exists() {
        fail(MISSING);
    }
    let apr_flags = env::var("APR_INCLUDES").ok().or_else(|| {
        ["apr-1-config", "apr-config"]
            .iter()
            .find_map(|c| run(c, &["--includes", "--cppflags"]))
    });
    let apr_flags = apr_flags.unwrap_or_else(|| fail(MISSING));

    let mut clang_args: Vec<String> = vec![format!("-I{httpd_inc}")];
    clang_args.extend(apr_flags.split_whitespace().map(str::to_string));

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let bindings = bindgen::Builder::default()
        .header("src/sys/wrapper.h")
        .clang_args(&clang_args)
        .allowlist_function("ap_.*|apr_.*|itk_shim_.*")
        .allowlist_var(
            "ap_.*|AP_.*|APR_.*|APLOG_.*|SERVER_.*|HTTP_.*|APEXIT_.*|MODULE_MAGIC_.*|OK|DECLINED|DONE\
             |RSRC_CONF|ACCESS_CONF|OR_.*|GLOBAL_ONLY|NOT_IN_.*|MPM_CHILD_.*|SB_.*|M_.*|core_module",
        )
        .allowlist_type(
            "module_struct|module|command_rec|cmd_parms|request_rec|conn_rec|server_rec|core_server_config|ap_.*|apr_.*",
        )
        .default_macro_constant_type(bindgen::MacroTypeVariation::Signed)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .generate()
        .unwrap_or_else(|e| fail(&format!("{MISSING} (bindgen: {e})")));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings");

    let mut build = cc::Build::new();
    build.file("src/sys/shim.c").warnings(true);
    for a in &clang_args {
        build.flag(a);
    }
    build.compile("itk_shim");
}
