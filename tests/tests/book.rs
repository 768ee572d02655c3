//! The book as a reader sees it: built with mdbook, every chapter of `docs/src/SUMMARY.md`
//! opened in headless Chromium. Each must render its heading and text, show every image
//! (the console's screenshots), list every chapter in the sidebar (mdbook's script ran) and
//! have every code block highlighted. `scripts/check-book.py` checks the links. Every shell
//! and SQL block is run by a test or says why not, and the SQL reference's examples run here,
//! in psql, as a reader pastes them.

use apikey_tests::shim::Shim;
use apikey_tests::webdriver::Browser;
use apikey_tests::{
    cli_args, connect_to, create_partner, env_var, operator_key, pgbin, superuser, Databases,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    let root = repository();
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

/// A fenced block of a page, with the marker that holds for it.
struct Block<'p> {
    /// 1-based line of its opening fence.
    line: usize,
    language: &'p str,
    marker: Option<&'p str>,
    body: Vec<&'p str>,
}

/// The fenced blocks of `text`, each with the last `<!-- blocks: ... -->` marker before it
/// (a heading ends a marker's hold).
fn blocks(text: &str) -> Vec<Block<'_>> {
    let mut found = Vec::new();
    let mut marker = None;
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if line.starts_with('#') {
            marker = None;
        } else if let Some(m) = line
            .strip_prefix("<!-- blocks: ")
            .and_then(|m| m.strip_suffix(" -->"))
        {
            marker = Some(m);
        } else if let Some(info) = line.strip_prefix("```") {
            found.push(Block {
                line: i + 1,
                language: info.split([' ', ',']).next().unwrap_or_default(),
                marker,
                body: lines
                    .by_ref()
                    .map(|(_, l)| l)
                    .take_while(|l| !l.starts_with("```"))
                    .collect(),
            });
        }
    }
    found
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_path_buf()
}

/// The book's pages, by file name.
fn pages(root: &Path) -> Vec<(String, String)> {
    let mut pages: Vec<(String, String)> = std::fs::read_dir(root.join("docs/src"))
        .expect("docs/src")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read a page");
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            (name.to_string(), text)
        })
        .collect();
    pages.sort();
    pages
}

/// Every `sh` and `sql` block of a page is either run by a test or says why not, in a marker
/// before it (`<!-- blocks: run by FILE -->` or `<!-- blocks: not run (why) -->`, holding
/// until the next heading or marker). A runner must name the page, the file the block
/// includes, or the block's first statement: a file that does none of these cannot be
/// running it.
#[test]
fn every_shell_and_sql_block_of_the_book_is_run_by_a_test_or_says_why_not() {
    let root = repository();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (name, text) in pages(&root) {
        for block in blocks(&text) {
            if !matches!(block.language, "sh" | "sql" | "bash" | "console" | "shell") {
                continue;
            }
            checked += 1;
            let at = format!("{name}:{}", block.line);
            let language = block.language;
            match block.marker {
                None => problems.push(format!("{at}: a {language} block with no marker")),
                Some(m) if m.starts_with("not run (") && m.len() > "not run ()".len() => {}
                Some(m) => match m.strip_prefix("run by ") {
                    None => problems.push(format!("{at}: unknown marker '{m}'")),
                    Some(runners) => {
                        let first = block.body.first().copied().unwrap_or_default();
                        let statement = first
                            .split(" --")
                            .next()
                            .unwrap_or_default()
                            .split(" #")
                            .next()
                            .unwrap_or_default()
                            .trim()
                            .trim_end_matches(';');
                        let included = first
                            .strip_prefix("{{#include ")
                            .and_then(|f| f.strip_suffix("}}"))
                            .and_then(|f| f.rsplit('/').next());
                        let runners = runners.split(" (").next().unwrap_or_default();
                        for runner in runners.split(", ") {
                            let Ok(source) = std::fs::read_to_string(root.join(runner)) else {
                                problems.push(format!("{at}: no runner {runner}"));
                                continue;
                            };
                            let names_it = source.contains(&name)
                                || included.is_some_and(|f| source.contains(f))
                                || (!statement.is_empty() && source.contains(statement));
                            if !names_it {
                                problems.push(format!(
                                    "{at}: {runner} names neither {name}, the included file \
                                     nor '{statement}'"
                                ));
                            }
                        }
                    }
                },
            }
        }
    }
    assert!(checked >= 30, "the pages' blocks were found: {checked}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// What marks the SQL blocks this file runs.
const RUN_IN_PSQL: &str = "run by tests/tests/book.rs (in psql, in order)";

/// The pages whose SQL examples run here (a page not listed would have its marked blocks
/// checked by nobody: the test fails on it).
const PSQL_PAGES: [&str; 2] = ["events.md", "sql.md"];

/// A page's SQL examples marked [`RUN_IN_PSQL`] run as a reader pastes them: one `psql`
/// session per page, the blocks in order, in a new database with the extension, stopping at
/// the first error.
#[test]
fn the_sql_examples_of_the_book_run_in_psql_as_they_are() {
    let root = repository();
    let mut databases = Databases::default();
    let mut ran = Vec::new();
    for (name, text) in pages(&root) {
        let script: Vec<String> = blocks(&text)
            .into_iter()
            .filter(|b| b.language == "sql" && b.marker == Some(RUN_IN_PSQL))
            .map(|b| b.body.join("\n"))
            .collect();
        if script.is_empty() {
            continue;
        }
        assert!(
            PSQL_PAGES.contains(&name.as_str()),
            "{name} has blocks marked '{RUN_IN_PSQL}': list it in PSQL_PAGES"
        );
        let database = databases.create("apikey_book_examples");
        connect_to(&env_var("APIKEY_TEST_PGUSER"), &database)
            .batch_execute("SET client_min_messages = warning; CREATE EXTENSION apikey")
            .expect("CREATE EXTENSION apikey");
        let mut psql = cli_args(&env_var("APIKEY_TEST_PGUSER"), &database);
        psql.extend(["-X", "--no-password", "-v", "ON_ERROR_STOP=1", "-f", "-"].map(String::from));
        let mut child = Command::new(pgbin("psql"))
            .args(&psql)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start psql");
        child
            .stdin
            .take()
            .expect("psql's stdin")
            .write_all(script.join("\n").as_bytes())
            .expect("the examples to psql");
        let output = child.wait_with_output().expect("psql ran");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        assert!(
            output.status.success() && stderr.trim().is_empty(),
            "the examples of {name} failed in psql: {stderr}\n(what ran: {stdout})"
        );
        ran.push((name, script.len(), stdout.to_string()));
    }
    let names: Vec<&str> = ran.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(names, PSQL_PAGES, "every page listed has examples to run");
    // What the pages say the examples answer.
    let answered = |page: &str, at_least: usize, answers: &[&str]| {
        let (_, blocks, output) = ran.iter().find(|(name, _, _)| name == page).expect("ran");
        assert!(*blocks >= at_least, "{page}'s examples: {blocks} blocks");
        for answer in answers {
            assert!(
                output.contains(answer),
                "{page}'s examples answered {answer}: {output}"
            );
        }
    };
    // The token verified, the balances the page names.
    answered("sql.md", 5, &[" t     | ok ", "10500", "105000"]);
    // The endpoint listed (by its URL), then deleted.
    answered(
        "events.md",
        1,
        &["https://hooks.acme.example/apikey", "apikey_webhook_delete"],
    );
}

/// What marks the shell blocks this file runs against a shim.
const RUN_IN_BASH: &str = "run by tests/tests/book.rs (in bash, against a shim)";

/// The HTTP reference's shell examples, as a reader pastes them after `scripts/up.sh`: bash
/// with `PARTNER_ID` and `ADMIN_TOKEN` set (a partner and an `admin:*` key, as up.sh makes),
/// the shim's address the only thing changed, stopping at the first failed command.
#[test]
fn the_http_examples_of_the_book_run_against_a_shim() {
    let root = repository();
    let (_, page) = pages(&root)
        .into_iter()
        .find(|(name, _)| name == "http.md")
        .expect("http.md");
    let script: Vec<String> = blocks(&page)
        .into_iter()
        .filter(|b| b.language == "sh" && b.marker == Some(RUN_IN_BASH))
        .map(|b| b.body.join("\n"))
        .collect();
    assert!(
        !script.is_empty(),
        "http.md has blocks marked '{RUN_IN_BASH}'"
    );
    let mut db = superuser();
    let partner = create_partner(&mut db);
    let admin = operator_key(&mut db);
    let shim = Shim::start();
    let script = script
        .join("\n")
        .replace("http://127.0.0.1:8080", &shim.url(""));
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PARTNER_ID", partner.to_string())
        .env("ADMIN_TOKEN", &admin.token)
        .output()
        .expect("run bash");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "the examples of http.md failed: {stderr}\n(what they printed: {stdout})"
    );
    // The new key verified, then rotated: a successor with its own token.
    assert!(stdout.contains(r#""valid":true"#), "{stdout}");
    assert!(stdout.contains(r#""rotated_from""#), "{stdout}");
}
