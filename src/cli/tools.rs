//! Command lines of the operator tools (`loadgen`, `echo`, `bench-engine`) and the
//! broker flags shared with `translate`. The library's tools take plain options
//! structs; each struct here only adds the flags (names, help, environment variables)
//! and converts into them. Defaults are read from the library's, so that a test
//! building options in code runs what the command line runs.

use std::path::PathBuf;

use translation_client::{Lane, DEFAULT_AMQP_URL, DEFAULT_EXCHANGE};
use translation_worker::tools::bench::EngineBenchOptions;
use translation_worker::tools::echo::EchoOptions;
use translation_worker::tools::loadgen::LoadgenOptions;
use translation_worker::tools::ConnectOptions;

/// Broker address and exchange, shared by the client subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// AMQP URI of the broker.
    #[arg(
        long,
        env = "TW_AMQP__URL",
        default_value = DEFAULT_AMQP_URL,
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// Exchange jobs are published to, with routing key `<source>-<target>`.
    #[arg(long, default_value = DEFAULT_EXCHANGE)]
    pub exchange: String,
}

impl From<ConnectArgs> for ConnectOptions {
    fn from(a: ConnectArgs) -> Self {
        Self {
            amqp_url: a.amqp_url,
            exchange: a.exchange,
        }
    }
}

/// The `loadgen` command line: what to send, and how to report it.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Broker and exchange.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Source language.
    #[arg(long, default_value_t = LoadgenOptions::default().source)]
    pub source: String,
    /// Target language.
    #[arg(long, default_value_t = LoadgenOptions::default().target)]
    pub target: String,
    /// Jobs to send in total.
    #[arg(long, default_value_t = LoadgenOptions::default().jobs)]
    pub jobs: u64,
    /// Jobs in flight at once.
    #[arg(long, default_value_t = LoadgenOptions::default().concurrency)]
    pub concurrency: usize,
    /// Texts in each job.
    #[arg(long, default_value_t = LoadgenOptions::default().texts_per_job)]
    pub texts_per_job: usize,
    /// Sentences, one per line (default: a built-in generator of Korean sentences).
    /// Jobs cycle through them.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Make every text unique (a prefix with a random run id and a counter), so nothing
    /// is answered from the cache, in this run or any earlier one.
    #[arg(long, conflicts_with = "pool")]
    pub unique: bool,
    /// Repeat a pool of P distinct jobs (after the first round, answers are cache hits).
    #[arg(long)]
    pub pool: Option<u64>,
    /// Check that every translation equals its input (the copy test model, `echo`).
    #[arg(long)]
    pub verify_copy: bool,
    /// A job with no reply after this many milliseconds is lost.
    #[arg(long, default_value_t = LoadgenOptions::default().timeout_ms)]
    pub timeout_ms: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 even when jobs were answered with errors (lost or wrong jobs still fail).
    #[arg(long)]
    pub allow_errors: bool,
    /// Send documents: each text is this many corpus sentences, one per line, sent
    /// with `split: sentences` (segments are then counted from the reply; a line
    /// break always ends a sentence, so they are the corpus sentences unless one holds
    /// several). 0: off.
    #[arg(long, default_value_t = LoadgenOptions::default().document_sentences)]
    pub document_sentences: usize,
    /// Beam size sent with every job (default: the worker's).
    #[arg(long)]
    pub beam_size: Option<u32>,
    /// Lane of every job: `bulk` (the job queue) or `interactive` (its interactive
    /// lane, batched first by the workers).
    #[arg(long, default_value_t = LoadgenOptions::default().lane)]
    pub lane: Lane,
    /// Send this many jobs per second on schedule (open loop, up to --concurrency in
    /// flight) instead of a new job as soon as one is answered.
    #[arg(long)]
    pub rate: Option<f64>,
}

impl LoadgenArgs {
    /// The library's options; `json` and `allow_errors` stay here: they are about the
    /// report's printing and the exit status, which the command decides.
    pub fn options(&self) -> LoadgenOptions {
        let a = self.clone();
        LoadgenOptions {
            connect: a.connect.into(),
            source: a.source,
            target: a.target,
            jobs: a.jobs,
            concurrency: a.concurrency,
            texts_per_job: a.texts_per_job,
            file: a.file,
            unique: a.unique,
            pool: a.pool,
            verify_copy: a.verify_copy,
            timeout_ms: a.timeout_ms,
            document_sentences: a.document_sentences,
            beam_size: a.beam_size,
            lane: a.lane,
            rate: a.rate,
        }
    }
}

/// The `echo` command line.
#[derive(Debug, Clone, clap::Args)]
pub struct EchoArgs {
    /// Broker and exchange (declared and bound like the worker does).
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Job queue to consume (declared like the worker's). Required, so that `echo`
    /// never answers a production queue by accident.
    #[arg(long)]
    pub queue: String,
    /// Dead-letter exchange and queue named in the job queue's arguments (must match
    /// the worker's when sharing its queue).
    #[arg(long, default_value = EchoOptions::DEFAULT_DEAD_LETTER)]
    pub dead_letter: String,
    /// Language pair(s) to bind, as `<source>-<target>`; repeat for more.
    #[arg(long = "pair", default_value = EchoOptions::DEFAULT_PAIR)]
    pub pairs: Vec<String>,
    /// Unacknowledged deliveries in flight, as the worker's `amqp.prefetch`.
    #[arg(long, default_value_t = EchoOptions::DEFAULT_PREFETCH)]
    pub prefetch: u16,
    /// Model id put in the replies.
    #[arg(long, default_value = EchoOptions::DEFAULT_MODEL)]
    pub model: String,
}

impl From<EchoArgs> for EchoOptions {
    fn from(a: EchoArgs) -> Self {
        Self {
            connect: a.connect.into(),
            queue: a.queue,
            dead_letter: a.dead_letter,
            pairs: a.pairs,
            prefetch: a.prefetch,
            model: a.model,
        }
    }
}

/// The `bench-engine` command line: what to measure.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchEngineArgs {
    /// Model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Sentence file, one sentence per line.
    #[arg(long)]
    pub sentences: PathBuf,
    /// Use the first N sentences.
    #[arg(long, default_value_t = EngineBenchOptions::default().limit)]
    pub limit: usize,
    /// Engine replicas (CTranslate2 inter_threads).
    #[arg(long, default_value_t = EngineBenchOptions::default().replicas)]
    pub replicas: usize,
    /// Threads per replica (CTranslate2 intra_threads).
    #[arg(long, default_value_t = EngineBenchOptions::default().threads_per_replica)]
    pub threads_per_replica: usize,
    /// CTranslate2 max_batch_size (examples).
    #[arg(long, default_value_t = EngineBenchOptions::default().max_batch_size)]
    pub max_batch_size: usize,
    /// Compute type.
    #[arg(long, default_value_t = EngineBenchOptions::default().compute_type)]
    pub compute_type: String,
    /// Beam size (1 = greedy).
    #[arg(long, default_value_t = EngineBenchOptions::default().beam_size)]
    pub beam_size: usize,
    /// Timed repetitions after one warm-up; the report keeps the best.
    #[arg(long, default_value_t = EngineBenchOptions::default().repeat)]
    pub repeat: usize,
    /// Batches of `max_batch_size` consecutive sentences in file order, one engine call
    /// each, from one thread per replica: what a batcher that cannot sort by length
    /// gets. The default is one call over all sentences, which CTranslate2 sorts by
    /// length before cutting batches (least padding: the ceiling).
    #[arg(long, conflicts_with = "window")]
    pub in_order: bool,
    /// A closed loop of W sentences in flight: batches chosen by the worker's own
    /// batching policy ([`crate::translate::next_batch`]), each run as one engine call
    /// by one thread per replica, a new sentence let in (in file order) for each one
    /// translated: the most a batcher that sees only W texts can do, without broker
    /// or cache. 0: off.
    #[arg(long, default_value_t = EngineBenchOptions::default().window)]
    pub window: usize,
    /// Documents of this many consecutive lines, joined with newlines and cut into
    /// segments by the worker's own segmenter (as `loadgen --document-sentences`
    /// sends them with `split: sentences`): every mode then translates those
    /// segments (the default mode's one sorted call is the ceiling over them), and
    /// `--window W` keeps W / D documents in flight, each let in whole and replaced
    /// once all of its segments are translated, as such a client refills the worker.
    /// 1: the lines themselves, one a job.
    #[arg(long, default_value_t = EngineBenchOptions::default().document_size)]
    pub document_size: usize,
    /// With `--window`: the policy's `max_batch_tokens` (default: the worker's).
    #[arg(long, default_value_t = EngineBenchOptions::default().max_batch_tokens)]
    pub max_batch_tokens: usize,
    /// With `--window`: the policy's `min_batch_size` (default: `--max-batch-size`,
    /// a fixed size).
    #[arg(long)]
    pub min_batch_size: Option<usize>,
    /// With `--window`: the policy's `max_wait_ms` (default: the worker's).
    #[arg(long, default_value_t = EngineBenchOptions::default().max_wait_ms)]
    pub max_wait_ms: u64,
    /// With `--window`: the policy's `max_delay_ms` (default: the worker's).
    #[arg(long, default_value_t = EngineBenchOptions::default().max_delay_ms)]
    pub max_delay_ms: u64,
}

impl From<BenchEngineArgs> for EngineBenchOptions {
    fn from(a: BenchEngineArgs) -> Self {
        Self {
            model: a.model,
            sentences: a.sentences,
            limit: a.limit,
            replicas: a.replicas,
            threads_per_replica: a.threads_per_replica,
            max_batch_size: a.max_batch_size,
            compute_type: a.compute_type,
            beam_size: a.beam_size,
            repeat: a.repeat,
            in_order: a.in_order,
            window: a.window,
            document_size: a.document_size,
            max_batch_tokens: a.max_batch_tokens,
            min_batch_size: a.min_batch_size,
            max_wait_ms: a.max_wait_ms,
            max_delay_ms: a.max_delay_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A stand-in top level, to parse one subcommand's flags alone.
    #[derive(Parser)]
    struct Line<T: clap::Args> {
        #[command(flatten)]
        args: T,
    }

    fn parse<T: clap::Args>(flags: &[&str]) -> T {
        let argv = std::iter::once("tw").chain(flags.iter().copied());
        Line::<T>::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{e}"))
            .args
    }

    // The library's defaults are the command line's: a test or script that builds
    // options in code runs what the bare command runs.
    #[test]
    fn bare_command_lines_are_the_library_defaults() {
        let mut loadgen = parse::<LoadgenArgs>(&[]).options();
        // The broker URL may come from TW_AMQP__URL in the test's environment.
        loadgen.connect.amqp_url = DEFAULT_AMQP_URL.into();
        assert_eq!(loadgen, LoadgenOptions::default());
        let mut echo = EchoOptions::from(parse::<EchoArgs>(&["--queue", "q"]));
        echo.connect.amqp_url = DEFAULT_AMQP_URL.into();
        assert_eq!(echo, EchoOptions::new(ConnectOptions::default(), "q"));
        let bench = EngineBenchOptions::from(parse::<BenchEngineArgs>(&[
            "--model",
            "m",
            "--sentences",
            "s",
        ]));
        assert_eq!(bench, EngineBenchOptions::new("m", "s"));
    }

    #[test]
    fn flags_reach_the_options() {
        let o = parse::<LoadgenArgs>(&[
            "--exchange",
            "x",
            "--jobs",
            "7",
            "--pool",
            "3",
            "--beam-size",
            "2",
            "--json",
            "--lane",
            "interactive",
            "--rate",
            "2.5",
        ])
        .options();
        assert_eq!(
            (o.connect.exchange.as_str(), o.jobs, o.pool, o.beam_size),
            ("x", 7, Some(3), Some(2))
        );
        assert_eq!((o.lane, o.rate), (Lane::Interactive, Some(2.5)));
        let e = EchoOptions::from(parse::<EchoArgs>(&[
            "--queue", "q", "--pair", "en-ko", "--pair", "ja-en",
        ]));
        assert_eq!(e.pairs, ["en-ko", "ja-en"]);
        let conflict = Line::<LoadgenArgs>::try_parse_from(["tw", "--unique", "--pool", "2"]);
        assert!(conflict.is_err());
        let conflict = Line::<BenchEngineArgs>::try_parse_from([
            "tw",
            "--model",
            "m",
            "--sentences",
            "s",
            "--in-order",
            "--window",
            "4",
        ]);
        assert!(conflict.is_err());
    }
}
