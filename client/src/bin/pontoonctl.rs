//! `pontoonctl`: etcdctl-style command line for a Pontoon cluster.
//!
//! ```text
//! pontoonctl [--endpoints HOST:PORT[,..]] [-w simple|json|fields] [--command-timeout 5s] \
//!     put KEY VALUE [--prev-kv]
//!     get KEY [RANGE_END] [--prefix] [--from-key] [--limit N] [--keys-only] [--count-only]
//!         [--consistency l|s]
//!     del KEY [RANGE_END] [--prefix] [--from-key] [--prev-kv]
//!     endpoint status
//! ```
//!
//! Output is etcdctl 3.4's (see `pontoon_client::output`); errors go to stderr as
//! `Error: ...` with exit code 1.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pontoon_client::client::{prefix_end, Client, ClientOptions, RangeOptions};
use pontoon_client::output::{self, Format};

#[derive(Debug, Parser)]
#[command(
    name = "pontoonctl",
    version,
    about = "etcdctl-style client of a Pontoon cluster"
)]
struct Cli {
    /// Comma-separated list of store addresses.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2479"
    )]
    endpoints: Vec<String>,
    /// Output format: simple, json or fields.
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        default_value = "simple"
    )]
    write_out: String,
    /// Timeout of one command, retries included (e.g. 5s, 500ms, 1m).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    command_timeout: Duration,
    /// Timeout of connecting to one endpoint.
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    dial_timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Puts the given key into the store.
    Put {
        /// The key.
        key: OsString,
        /// The value.
        value: OsString,
        /// Return the previous key-value pair before modification.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Gets the key or a range of keys.
    Get {
        /// The key (or start of the range).
        key: OsString,
        /// End of the range, exclusive.
        range_end: Option<OsString>,
        /// Get keys with matching prefix.
        #[arg(long)]
        prefix: bool,
        /// Get keys that are greater than or equal to the given key.
        #[arg(long)]
        from_key: bool,
        /// Maximum number of results.
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Get only the keys.
        #[arg(long)]
        keys_only: bool,
        /// Get only the count.
        #[arg(long)]
        count_only: bool,
        /// Linearizable (l) or serializable (s).
        #[arg(long, default_value = "l")]
        consistency: String,
    },
    /// Removes the specified key or range of keys [key, range_end).
    Del {
        /// The key (or start of the range).
        key: OsString,
        /// End of the range, exclusive.
        range_end: Option<OsString>,
        /// Delete keys with matching prefix.
        #[arg(long)]
        prefix: bool,
        /// Delete keys that are greater than or equal to the given key.
        #[arg(long)]
        from_key: bool,
        /// Return deleted key-value pairs.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Endpoint related commands.
    Endpoint {
        #[command(subcommand)]
        command: EndpointCommand,
    },
}

#[derive(Debug, Subcommand)]
enum EndpointCommand {
    /// Prints out the status of the endpoints given in --endpoints.
    Status,
}

/// Parses `5s`, `500ms`, `2m`, `1h` or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// etcd's `--prefix` / `--from-key` / `RANGE_END` rules (clientv3 `WithPrefix`,
/// `WithFromKey`): returns (key, range_end).
fn key_range(
    key: &OsString,
    range_end: &Option<OsString>,
    prefix: bool,
    from_key: bool,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut key = key.as_bytes().to_vec();
    if prefix && from_key {
        return Err(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one".into(),
        );
    }
    if let Some(end) = range_end {
        if prefix {
            return Err(
                "too many arguments, only accept one argument when `--prefix` is set.".into(),
            );
        }
        if from_key {
            return Err(
                "too many arguments, only accept one argument when `--from-key` is set.".into(),
            );
        }
        return Ok((key, end.as_bytes().to_vec()));
    }
    if prefix {
        if key.is_empty() {
            return Ok((vec![0], vec![0]));
        }
        let end = prefix_end(&key);
        return Ok((key, end));
    }
    if from_key {
        if key.is_empty() {
            key = vec![0];
        }
        return Ok((key, vec![0]));
    }
    Ok((key, Vec::new()))
}

async fn run(cli: Cli) -> Result<Vec<u8>, String> {
    let format: Format = cli.write_out.parse()?;
    let opts = ClientOptions {
        request_timeout: cli.command_timeout,
        attempt_timeout: cli.command_timeout,
        connect_timeout: cli.dial_timeout.min(cli.command_timeout),
        client_name: "pontoonctl".into(),
        ..ClientOptions::default()
    };
    let endpoints: Vec<String> = cli
        .endpoints
        .iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    let client = Client::new(&endpoints, opts).map_err(|e| e.to_string())?;
    match cli.command {
        Command::Put {
            key,
            value,
            prev_kv,
        } => {
            let r = client
                .put(key.as_bytes(), value.as_bytes(), prev_kv)
                .await
                .map_err(|e| e.to_string())?;
            Ok(output::put(format, &r))
        }
        Command::Get {
            key,
            range_end,
            prefix,
            from_key,
            limit,
            keys_only,
            count_only,
            consistency,
        } => {
            let serializable = match consistency.as_str() {
                "l" => false,
                "s" => true,
                other => return Err(format!("unknown consistency flag {other:?}")),
            };
            let (key, range_end) = key_range(&key, &range_end, prefix, from_key)?;
            let r = client
                .range(
                    &key,
                    RangeOptions {
                        range_end,
                        limit,
                        keys_only,
                        count_only,
                        serializable,
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(output::get(format, &r, count_only))
        }
        Command::Del {
            key,
            range_end,
            prefix,
            from_key,
            prev_kv,
        } => {
            let (key, range_end) = key_range(&key, &range_end, prefix, from_key)?;
            let r = client
                .delete(&key, &range_end, prev_kv)
                .await
                .map_err(|e| e.to_string())?;
            Ok(output::del(format, &r))
        }
        Command::Endpoint {
            command: EndpointCommand::Status,
        } => {
            let mut list = Vec::new();
            let mut failed = None;
            for (i, ep) in endpoints.iter().enumerate() {
                match client.endpoint_status(i).await {
                    Ok(st) => list.push(st),
                    Err(e) => {
                        eprintln!("Failed to get the status of endpoint {ep} ({e})");
                        failed = Some(e.to_string());
                    }
                }
            }
            let out = output::endpoint_status(format, &list);
            match failed {
                None => Ok(out),
                Some(e) => {
                    let _ = std::io::stdout().write_all(&out);
                    Err(e)
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(&out)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn key_ranges_follow_clientv3() {
        let k = |s: &str| OsString::from(s);
        assert_eq!(
            key_range(&k("foo"), &None, true, false),
            Ok((b"foo".to_vec(), b"fop".to_vec()))
        );
        assert_eq!(
            key_range(&k(""), &None, true, false),
            Ok((vec![0], vec![0]))
        );
        assert_eq!(
            key_range(&k("a"), &None, false, true),
            Ok((b"a".to_vec(), vec![0]))
        );
        assert_eq!(
            key_range(&k("a"), &Some(k("c")), false, false),
            Ok((b"a".to_vec(), b"c".to_vec()))
        );
        assert!(key_range(&k("a"), &Some(k("c")), true, false).is_err());
        assert_eq!(
            key_range(&k("a"), &None, false, false),
            Ok((b"a".to_vec(), vec![]))
        );
    }
}
