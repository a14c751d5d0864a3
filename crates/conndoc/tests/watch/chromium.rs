//! A real headless Chromium (Debian package) loads the dashboard while a target turns from
//! up to down: the rendered DOM says so with the cause, and the screenshots show it (the red
//! badge and row appear only once the target is down; on the target's page the strip and
//! the cause timeline turn red, named by the cause). The screenshots are kept as test
//! artifacts in `target/tmp/watch-chromium/` (CARGO_TARGET_TMPDIR).

use super::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub fn need_chromium() -> Need {
    match chromium() {
        Some(_) => Need::met(),
        None => Need::missing("needs `chromium` (Debian package chromium; listed in .ci/packages)"),
    }
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for d in path.to_str()?.split(':') {
            let c = Path::new(d).join(name);
            if c.is_file() {
                return Some(c);
            }
        }
    }
    None
}

/// Run Chromium headless with a fresh profile, bounded by `timeout`; returns stdout.
fn run_chromium(bin: &Path, profile: &Path, args: &[String]) -> String {
    let out = Command::new("timeout")
        .arg("90")
        .arg(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pixels of exactly this colour in a PNG.
fn count_color(png_path: &Path, rgb: [u8; 3]) -> usize {
    let dec = png::Decoder::new(std::fs::File::open(png_path).unwrap());
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bpp = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf[..info.buffer_size()].chunks(bpp).filter(|p| p[..3] == rgb).count()
}

/// The part of `html` from `start` to the next `end` (inclusive); empty when absent.
fn section<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let Some(a) = html.find(start) else { return "" };
    let z = html[a..].find(end).map_or(html.len(), |z| a + z + end.len());
    &html[a..z]
}

/// Copy the screenshots where they outlive the test's temporary directory.
fn keep_artifacts(files: &[&Path]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("watch-chromium");
    std::fs::create_dir_all(&dir).unwrap();
    for f in files {
        std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
    }
    dir
}

const RED_BADGE: [u8; 3] = [0xc6, 0x28, 0x28];
const DOWN_ROW: [u8; 3] = [0xfd, 0xec, 0xec];
const GREEN_BADGE: [u8; 3] = [0x1f, 0x8a, 0x4c];

pub fn dashboard_shows_target_going_down_with_its_cause() {
    let bin = chromium().expect("checked by the trial's requirement");
    let dir = TempDir::new("chromium");
    let (svc_port, listen) = (free_port(), free_port());
    let cfg = config(&dir, listen, &[("api", svc_port)], &[]);
    let svc = Service::start(svc_port);
    let d = Daemon::start(&cfg, ([127, 0, 0, 1], listen).into(), &dir.path("log"));
    d.wait_state("api", "up", Duration::from_secs(20));
    let url = format!("http://127.0.0.1:{listen}/");

    let dom = run_chromium(&bin, &dir.path("p1"), &["--dump-dom".into(), url.clone()]);
    assert!(dom.contains("data-target=\"api\" data-state=\"up\" data-cause=\"ok\""), "{dom}");
    assert!(dom.contains("0 down") && dom.contains("1 up"), "{dom}");
    let up_png = dir.path("up.png");
    run_chromium(
        &bin,
        &dir.path("p2"),
        &[format!("--screenshot={}", up_png.display()), "--window-size=1200,500".into(), url.clone()],
    );
    assert!(count_color(&up_png, GREEN_BADGE) > 300, "the green UP badge is visible");
    assert_eq!(count_color(&up_png, DOWN_ROW), 0, "no red row while up");
    assert_eq!(count_color(&up_png, RED_BADGE), 0, "nothing red while up");

    // Up: every cell of the strip is green (a check every 200 ms, 1 s buckets: no cell
    // narrower than a bucket, so none without a check), the timeline has no period.
    let up_page =
        run_chromium(&bin, &dir.path("p2b"), &["--dump-dom".into(), format!("http://127.0.0.1:{listen}/target/api")]);
    let strip = section(&up_page, "<svg id=\"strip\"", "</svg>");
    assert!(strip.contains("class=\"cell up\""), "{strip}");
    assert!(!strip.contains("cell none") && !strip.contains("cell down"), "{strip}");
    assert!(!up_page.contains("class=\"period\""), "{up_page}");
    assert!(up_page.contains("<polyline class=\"mean\""), "the latency chart has its line: {up_page}");

    svc.stop();
    d.wait_state("api", "down", Duration::from_secs(20));
    let dom = run_chromium(&bin, &dir.path("p3"), &["--dump-dom".into(), url.clone()]);
    assert!(dom.contains("data-target=\"api\" data-state=\"down\" data-cause=\"no-listener\""), "{dom}");
    assert!(dom.contains("<code class=\"cause\">no-listener</code>"), "{dom}");
    assert!(dom.contains("1 down"), "{dom}");
    let down_png = dir.path("down.png");
    run_chromium(
        &bin,
        &dir.path("p4"),
        &[format!("--screenshot={}", down_png.display()), "--window-size=1200,500".into(), url],
    );
    assert!(count_color(&down_png, RED_BADGE) > 300, "the red DOWN badge is visible");
    assert!(count_color(&down_png, DOWN_ROW) > 3000, "the row turned red");
    assert_eq!(count_color(&down_png, GREEN_BADGE), 0, "no green badge any more");

    // The target's page: the strip and the cause timeline show the cause (SVG, no script).
    let page =
        run_chromium(&bin, &dir.path("p5"), &["--dump-dom".into(), format!("http://127.0.0.1:{listen}/target/api")]);
    assert!(page.contains("id=\"state\">down</span>"), "{page}");
    assert!(page.contains("<pre id=\"report\">"), "{page}");
    assert!(page.contains(&format!("127.0.0.1:{svc_port}")), "{page}");
    let strip = section(&page, "<svg id=\"strip\"", "</svg>");
    assert!(strip.contains("class=\"cell down\" data-cause=\"no-listener\""), "the strip names the cause: {strip}");
    assert!(strip.contains("class=\"cell up\""), "and still shows the checks that passed: {strip}");
    assert!(!strip.contains("cell none"), "checked every 200 ms: no cell without checks: {strip}");
    let causes = section(&page, "<svg id=\"causes\"", "</svg>");
    assert!(causes.contains("<g class=\"period\" data-cause=\"no-listener\">"), "{causes}");
    assert!(causes.contains("no-listener") && causes.contains("–now</title>"), "still down: until now: {causes}");
    let table = section(&page, "<table id=\"timeline\"", "</table>");
    assert!(table.contains("data-cause=\"no-listener\"") && table.contains("<td>now</td>"), "{table}");
    assert!(!page.contains("<script"), "no JavaScript");
    let page_png = dir.path("target-down.png");
    run_chromium(
        &bin,
        &dir.path("p6"),
        &[
            format!("--screenshot={}", page_png.display()),
            "--window-size=1200,900".into(),
            format!("http://127.0.0.1:{listen}/target/api"),
        ],
    );
    // The badge alone is a few hundred red pixels; the strip's red cells and the timeline's
    // band add thousands.
    let red = count_color(&page_png, RED_BADGE);
    assert!(red > 3000, "the strip and the timeline show the outage in red ({red} red pixels)");
    assert!(count_color(&page_png, GREEN_BADGE) > 300, "the checks before it in green");
    let kept = keep_artifacts(&[&up_png, &down_png, &page_png]);
    eprintln!("screenshots kept in {}", kept.display());
    assert_eq!(d.terminate(), Some(0));
}
