//! The book as a reader sees it: built with mdbook, every chapter of `docs/src/SUMMARY.md`
//! opened in headless Chromium. Each must render its heading and text, show every image
//! (the console's screenshots), list every chapter in the sidebar (mdbook's script ran) and
//! have every code block highlighted. `scripts/check-book.py` checks the links.

use apikey_tests::webdriver::Browser;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The chapters of the book, as the HTML files mdbook writes for them, in order.
fn chapters(root: &Path) -> Vec<String> {
    let summary =
        std::fs::read_to_string(root.join("docs/src/SUMMARY.md")).expect("read SUMMARY.md");
    summary
        .lines()
        .filter_map(|line| {
            let target = line.split_once("](")?.1.split_once(')')?.0;
            Some(target.strip_suffix(".md")?.to_string() + ".html")
        })
        .collect()
}

struct BuiltBook(PathBuf);

impl Drop for BuiltBook {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn every_chapter_of_the_book_renders_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_path_buf();
    let book = BuiltBook(std::env::temp_dir().join(format!("apikey-book-{}", std::process::id())));
    let built = Command::new("mdbook")
        .arg("build")
        .arg("docs")
        .arg("-d")
        .arg(&book.0)
        .current_dir(&root)
        .output()
        .expect("run mdbook (scripts/install-deps.sh installs it)");
    assert!(
        built.status.success(),
        "mdbook build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let chapters = chapters(&root);
    assert!(
        chapters.len() >= 10,
        "SUMMARY.md lists the chapters: {chapters:?}"
    );

    let browser = Browser::start();
    for chapter in &chapters {
        let path = book.0.join(chapter);
        assert!(path.exists(), "mdbook wrote {chapter}");
        browser.goto(&format!("file://{}", path.display()));
        let page = browser.exec(
            r#"
            const main = document.querySelector('main');
            const h1 = main && main.querySelector('h1');
            return {
                title: document.title,
                h1: h1 ? h1.textContent.trim() : '',
                text: main ? main.innerText.length : 0,
                images: [...document.querySelectorAll('main img')].map(i => ({
                    src: i.getAttribute('src'), shown: i.complete && i.naturalWidth > 0 })),
                sidebar: document.querySelectorAll('mdbook-sidebar-scrollbox a[href$=".html"]').length,
                code: document.querySelectorAll('main pre code').length,
                highlighted: document.querySelectorAll('main pre code.hljs').length,
            };
            "#,
            vec![],
        );
        let what = format!("{chapter}: {page}");
        assert!(
            page["title"].as_str().is_some_and(|t| t.contains("apikey")),
            "{what}"
        );
        assert!(
            page["h1"].as_str().is_some_and(|h| !h.is_empty()),
            "a heading: {what}"
        );
        assert!(
            page["text"].as_u64().is_some_and(|n| n > 200),
            "text: {what}"
        );
        for image in page["images"].as_array().expect("images") {
            assert_eq!(image["shown"], true, "{chapter}: image {}", image["src"]);
        }
        assert!(
            page["sidebar"]
                .as_u64()
                .is_some_and(|n| n as usize >= chapters.len()),
            "the sidebar lists every chapter: {what}"
        );
        assert_eq!(
            page["code"], page["highlighted"],
            "every code block highlighted: {what}"
        );
    }
    let console = book.0.join("console.html");
    browser.goto(&format!("file://{}", console.display()));
    let images = browser.exec(
        "return document.querySelectorAll('main img').length;",
        vec![],
    );
    assert!(
        images.as_u64().is_some_and(|n| n >= 3),
        "the console's chapter shows its screenshots: {images}"
    );
}
