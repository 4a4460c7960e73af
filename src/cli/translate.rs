//! `translate`: texts from the command line, a file or stdin, through the broker;
//! with `--out`, a whole document (`.txt`, `.html`, `.md`, `.docx`, `.pptx`, `.odt`)
//! through [`documents::translate_document`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use translation_client::wire::Split;
use translation_client::{Answer, Client, ClientError, ClientOptions, RawReply, TranslateRequest};
use translation_worker::documents::{self, FileKind};

use super::tools::ConnectArgs;

/// Jobs of one document in flight at once: enough to keep a few workers busy,
/// few enough not to crowd out other clients' jobs.
const FILE_JOBS_IN_FLIGHT: usize = 4;

/// `translate`: translate texts from the command line, a file or stdin.
#[derive(Debug, Clone, clap::Args)]
pub struct TranslateArgs {
    /// Broker and exchange.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Source language.
    #[arg(long, default_value = "ko")]
    pub source: String,
    /// Target language.
    #[arg(long, default_value = "en")]
    pub target: String,
    /// Read texts from this file, one per line (default: the arguments, else stdin).
    /// With --out: the document to translate.
    #[arg(long, conflicts_with = "texts")]
    pub file: Option<PathBuf>,
    /// Translate the document --file (its kind from its extension: .txt, .html,
    /// .md, .docx, .pptx, .odt) and write the translated file here.
    #[arg(long, requires = "file", conflicts_with_all = ["document", "json"])]
    pub out: Option<PathBuf>,
    /// Print each reply's JSON body (one per line) instead of the translations.
    #[arg(long)]
    pub json: bool,
    /// Milliseconds to wait for each reply.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Texts per job (more lines are sent as several jobs, concurrently). At most the
    /// worker's `limits.max_texts` (128 by default).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub texts_per_job: u32,
    /// Job id, echoed in the replies.
    #[arg(long)]
    pub id: Option<String>,
    /// Documents: the whole --file or stdin (or each argument) is one text, split into
    /// sentences by the worker and printed back with its own line breaks.
    #[arg(long)]
    pub document: bool,
    /// Texts to translate.
    pub texts: Vec<String>,
}

/// Runs `translate`: exits 1 after a failed job or text.
pub fn run(args: &TranslateArgs) -> anyhow::Result<()> {
    if let (Some(file), Some(out)) = (&args.file, &args.out) {
        return translate_file(args, file, out);
    }
    // Read the input before starting the runtime: blocking I/O stays off it.
    let texts = read_texts(args)?;
    if texts.is_empty() {
        return Ok(());
    }
    let results = super::runtime()?.block_on(translate_texts(args, texts))?;
    if !print_replies(args, &results)? {
        std::process::exit(1);
    }
    Ok(())
}

/// Sends `texts` in jobs of `args.texts_per_job`, all at once, and returns each job's
/// outcome in order.
async fn translate_texts(
    args: &TranslateArgs,
    texts: Vec<String>,
) -> Result<Vec<Result<RawReply, ClientError>>, ClientError> {
    let client = connect(args).await?;
    let calls = texts
        .chunks(args.texts_per_job as usize)
        .map(|chunk| {
            let mut request =
                TranslateRequest::new(args.source.as_str(), args.target.as_str(), chunk.to_vec());
            request.job.id = args.id.clone();
            if args.document {
                request.job.split = Split::Sentences;
            }
            client.call(request)
        })
        .collect::<Vec<_>>();
    let results = futures_util::future::join_all(calls).await;
    client.close().await;
    Ok(results)
}

/// The client of `args`: its broker, exchange and reply timeout.
async fn connect(args: &TranslateArgs) -> Result<Client, ClientError> {
    Client::connect(
        &args.connect.amqp_url,
        ClientOptions {
            exchange: args.connect.exchange.clone(),
            timeout: Duration::from_millis(args.timeout_ms),
            ..ClientOptions::default()
        },
    )
    .await
}

/// `translate --file F --out G`: the document F translated into G.
fn translate_file(args: &TranslateArgs, input: &Path, output: &Path) -> anyhow::Result<()> {
    let kind = FileKind::from_name(&input.to_string_lossy()).with_context(|| {
        let kinds: Vec<_> = FileKind::ALL.iter().map(|k| k.extension()).collect();
        format!(
            "{}: unsupported file type (supported: {})",
            input.display(),
            kinds.join(" ")
        )
    })?;
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    let extracted = documents::extract(kind, &bytes, documents::MAX_EXPANDED_BYTES)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let translated = super::runtime()?.block_on(async {
        let client = connect(args).await?;
        let client = &client;
        let result = documents::translate_document(
            &extracted,
            args.texts_per_job as usize,
            FILE_JOBS_IN_FLIGHT,
            |texts, format| {
                let mut request =
                    TranslateRequest::new(args.source.as_str(), args.target.as_str(), texts)
                        .with_format(format);
                request.job.id = args.id.clone();
                async move {
                    let reply = client.translate(request).await?;
                    if let Some((i, e)) = reply
                        .errors
                        .iter()
                        .enumerate()
                        .find_map(|(i, e)| Some((i, e.as_ref()?)))
                    {
                        anyhow::bail!(
                            "a text of the document failed ({i} of its job): {}: {}",
                            e.code,
                            e.message
                        );
                    }
                    if reply.truncated.iter().any(|t| *t) {
                        eprintln!(
                            "warning: a paragraph was longer than the model reads: truncated"
                        );
                    }
                    Ok(reply.translations)
                }
            },
        )
        .await;
        client.close().await;
        result
    })?;
    std::fs::write(output, translated)
        .with_context(|| format!("cannot write {}", output.display()))?;
    eprintln!(
        "{} → {}: {} texts translated",
        input.display(),
        output.display(),
        extracted.texts().len()
    );
    Ok(())
}

/// The texts of `translate`: its arguments, else the lines of --file, else of stdin
/// (with --document: the whole file or stdin as one text).
fn read_texts(args: &TranslateArgs) -> anyhow::Result<Vec<String>> {
    if !args.texts.is_empty() {
        return Ok(args.texts.clone());
    }
    let text = match &args.file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?,
    };
    if args.document {
        return Ok(vec![text]);
    }
    Ok(text.lines().map(str::to_owned).collect())
}

/// Prints the replies in order; returns false after the first failed job (its error
/// goes to stderr). With --json every reply body is printed, one per line.
fn print_replies(
    args: &TranslateArgs,
    results: &[Result<RawReply, ClientError>],
) -> anyhow::Result<bool> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mut ok = true;
    for result in results {
        // Texts the worker cut or could not translate are named on stderr, and a
        // failed text makes the command fail.
        if let Ok(Answer::Ok(reply)) = result.as_ref().map(|r| &r.answer) {
            for (i, e) in reply.errors.iter().enumerate() {
                if let Some(e) = e {
                    eprintln!("error: text {i}: {}: {}", e.code, e.message);
                    ok = false;
                }
            }
            for (i, _) in reply.truncated.iter().enumerate().filter(|(_, t)| **t) {
                eprintln!("warning: text {i} was longer than the model reads: truncated");
            }
        }
        match result {
            Ok(raw) if args.json => {
                out.write_all(&raw.body)?;
                out.write_all(b"\n")?;
                if let Answer::Error(e) = &raw.answer {
                    eprintln!("error: {}: {}", e.code, e.message);
                    ok = false;
                }
            }
            Ok(raw) => match &raw.answer {
                // A document is printed as it came back: its own line breaks.
                Answer::Ok(reply) if args.document => {
                    for t in &reply.translations {
                        write!(out, "{t}")?;
                    }
                }
                Answer::Ok(reply) => {
                    for t in &reply.translations {
                        writeln!(out, "{t}")?;
                    }
                }
                Answer::Error(e) => {
                    eprintln!("error: {}: {}", e.code, e.message);
                    ok = false;
                    break;
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                ok = false;
                if !args.json {
                    break;
                }
            }
        }
    }
    out.flush()?;
    Ok(ok)
}
