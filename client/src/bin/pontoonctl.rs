//! `pontoonctl`: etcdctl-style command line for a Pontoon cluster.
//!
//! ```text
//! pontoonctl [--endpoints HOST:PORT[,..]] [-w simple|json|fields|table] [--command-timeout 5s] \
//!     put KEY VALUE [--prev-kv]
//!     get KEY [RANGE_END] [--prefix] [--from-key] [--limit N] [--keys-only] [--count-only]
//!         [--consistency l|s]
//!     del KEY [RANGE_END] [--prefix] [--from-key] [--prev-kv]
//!     endpoint status
//!     member list
//!     member add ID --peer-urls HOST:PORT [--learner]
//!     member remove ID
//!     move-leader ID
//!     region list
//!     region split KEY
//!     store list
//!     store delete ID
//!     store up ID
//! ```
//!
//! Member ids are store ids. They are printed in hex, as etcdctl does; as arguments they
//! are read as hex with a `0x` prefix or when they contain a hex letter, and as decimal
//! when they are all digits (so `10` is store ten, `0x10` and `a` are sixteen and ten).
//!
//! Region and store ids are printed in hex too (decimal in `-w json` and `-w fields`);
//! store ids are read as member ids are.
//! Region boundary keys are printed as they are when they are printable ASCII without
//! spaces, quotes, backslashes or commas, and Go-quoted otherwise; an empty start key is
//! `-inf` and an empty end key `+inf`.
//!
//! Output is etcdctl 3.4's (see `pontoon_client::output`); `-w table` exists for the
//! region commands and `store list` only. Errors go to stderr as `Error: ...` with exit
//! code 1.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pontoon_client::client::{prefix_end, Client, ClientOptions, RangeOptions};
use pontoon_client::output::{self, EndpointHealth, Format};

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
    /// Output format: simple, json or fields; table for endpoint status and health, member
    /// list, the region commands and store list.
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
        /// The value; read from standard input (all of it, as is) when not given.
        value: Option<OsString>,
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
    /// Membership related commands.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Transfers leadership to another member.
    MoveLeader {
        /// Store id of the new leader (decimal, or hex with 0x or a hex letter).
        #[arg(value_parser = parse_id)]
        id: u64,
    },
    /// Region related commands.
    Region {
        #[command(subcommand)]
        command: RegionCommand,
    },
    /// Store related commands: list the stores, decommission one.
    ///
    /// A store is Up (it holds region peers and takes new ones), Offline (being
    /// decommissioned: the cluster moves its peers to Up stores) or Tombstone
    /// (decommissioned: it holds no peer and never comes back; only the cluster sets this
    /// state).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Lists the cluster's stores, as the answering store knows them.
    ///
    /// Columns: ID (hex), ADDRESS (for clients), PEER_ADDRESS (for other stores), STATE
    /// (Up, Offline: being decommissioned, Tombstone: decommissioned), ALIVE (the
    /// answering store heard from it recently), REGIONS and LEADERS (region peers it holds
    /// and regions it leads, as it last reported). An unknown address is "-". With `-w
    /// json`, states are metapb's numbers (Up = 0, omitted; Offline = 1; Tombstone = 2).
    List,
    /// Decommissions a store: sets it Offline.
    ///
    /// The cluster moves the store's region peers to other Up stores, then sets it
    /// Tombstone once it holds none. Refused for an unknown or Tombstone store, and when
    /// fewer Up stores would remain than each region needs peers. `store up` cancels a
    /// decommission that has not finished.
    Delete {
        /// Store id (decimal, or hex with 0x or a hex letter).
        #[arg(value_parser = parse_id)]
        id: u64,
    },
    /// Cancels a decommission: sets an Offline store Up again.
    ///
    /// Peers already moved away stay where they are. A Tombstone store cannot come back.
    Up {
        /// Store id (decimal, or hex with 0x or a hex letter).
        #[arg(value_parser = parse_id)]
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
enum RegionCommand {
    /// Lists every region the stores hold.
    ///
    /// Columns: ID, START, END, VERSION, CONF_VER, PEERS (store ids), LEADER (store id, "-"
    /// if none known), SIZE. START and END are the region's [start, end) keys: "-inf" is
    /// the empty start key, "+inf" the empty (unbounded) end key; other keys are printed
    /// as they are when printable ASCII without spaces, quotes, backslashes or commas, and
    /// Go-quoted otherwise. Ids are in hex.
    List,
    /// Splits the region holding KEY at KEY.
    ///
    /// Prints the two resulting regions, left then right, with the columns of `region
    /// list` up to PEERS.
    Split {
        /// The split key: the first key of the new right-hand region.
        key: OsString,
    },
}

#[derive(Debug, Subcommand)]
enum MemberCommand {
    /// Lists all members in the cluster.
    List,
    /// Adds a member into the cluster.
    Add {
        /// Store id of the new member (decimal, or hex with 0x or a hex letter).
        #[arg(value_parser = parse_id)]
        id: u64,
        /// Peer address (host:port) the other stores reach the new member on.
        #[arg(long = "peer-urls")]
        peer_urls: String,
        /// Add as a learner (non-voting member).
        #[arg(long)]
        learner: bool,
    },
    /// Removes a member from the cluster.
    Remove {
        /// Store id of the member (decimal, or hex with 0x or a hex letter).
        #[arg(value_parser = parse_id)]
        id: u64,
    },
}

/// A member id: hex with a `0x` prefix or when it has a hex letter (etcdctl prints ids in
/// hex), decimal when it is all digits (store ids are usually typed as small numbers).
fn parse_id(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let parsed = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
    } else if t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse()
    } else {
        u64::from_str_radix(t, 16)
    };
    match parsed {
        Ok(0) => Err(format!("bad member ID arg ({s:?}): 0 is not a member id")),
        Ok(id) => Ok(id),
        Err(e) => Err(format!("bad member ID arg ({s:?}): {e}")),
    }
}

/// The peer address of `--peer-urls`: one `host:port`, an `http://` or `https://` scheme
/// (as etcdctl users type it) dropped, since stores talk the Pontoon protocol, not HTTP.
fn peer_addr(urls: &str) -> Result<String, String> {
    let list: Vec<&str> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let [one] = list.as_slice() else {
        return Err("member peer urls not provided (exactly one host:port expected)".into());
    };
    let addr = one
        .strip_prefix("http://")
        .or_else(|| one.strip_prefix("https://"))
        .unwrap_or(one)
        .trim_end_matches('/');
    if !addr.contains(':') {
        return Err(format!("bad peer url {one:?}: host:port expected"));
    }
    Ok(addr.to_string())
}

#[derive(Debug, Subcommand)]
enum EndpointCommand {
    /// Prints out the status of the endpoints given in --endpoints.
    Status,
    /// Checks the health of the endpoints given in --endpoints: each must serve a
    /// linearizable read of the key "health" itself.
    Health,
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

const TABLE_NOT_SUPPORTED: &str = "table not supported as output format for this command (only endpoint status and health, member list, region and store list)";

/// `put`'s value when the command line has none: all of standard input, as etcdctl reads
/// it (bytes as they are, a trailing newline included); nothing there is an error.
fn value_from_stdin() -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let mut value = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut value)
        .map_err(|e| format!("cannot read the value from standard input: {e}"))?;
    if value.is_empty() {
        return Err("put command needs 1 argument and input from stdin or 2 arguments".into());
    }
    Ok(value)
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
    // etcdctl prints tables for `endpoint status` and `member list` (and refuses `-w table`
    // elsewhere); Pontoon's `region` and `store list` have them too.
    let has_table = matches!(
        cli.command,
        Command::Region { .. }
            | Command::Store {
                command: StoreCommand::List
            }
            | Command::Endpoint {
                command: EndpointCommand::Status | EndpointCommand::Health
            }
            | Command::Member {
                command: MemberCommand::List
            }
    );
    if format == Format::Table && !has_table {
        return Err(TABLE_NOT_SUPPORTED.into());
    }
    let client = Client::new(&endpoints, opts).map_err(|e| e.to_string())?;
    match cli.command {
        Command::Put {
            key,
            value,
            prev_kv,
        } => {
            let value = match value {
                Some(v) => v.as_bytes().to_vec(),
                None => value_from_stdin()?,
            };
            let r = client
                .put(key.as_bytes(), &value, prev_kv)
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
        Command::Endpoint {
            command: EndpointCommand::Health,
        } => {
            // All endpoints at once: one that is down costs its timeout, not the others'.
            let checks: Vec<_> = endpoints
                .iter()
                .enumerate()
                .map(|(i, ep)| {
                    let (client, endpoint) = (client.clone(), ep.clone());
                    tokio::spawn(async move {
                        let start = std::time::Instant::now();
                        let r = client.endpoint_health(i).await;
                        EndpointHealth {
                            endpoint,
                            health: r.is_ok(),
                            took: output::go_duration(start.elapsed()),
                            error: r.err().map(|e| e.to_string()).unwrap_or_default(),
                        }
                    })
                })
                .collect();
            let mut list = Vec::with_capacity(checks.len());
            for c in checks {
                list.push(c.await.map_err(|e| format!("health check failed: {e}"))?);
            }
            let (out, err) = output::endpoint_health(format, &list);
            let _ = std::io::stderr().write_all(&err);
            if list.iter().all(|h| h.health) {
                Ok(out)
            } else {
                let _ = std::io::stdout().write_all(&out);
                Err("unhealthy cluster".into())
            }
        }
        Command::Member { command } => member(&client, format, command).await,
        Command::MoveLeader { id } => {
            // etcdctl names the old leader: ask any store which member leads now.
            let before = client.member_list().await.map_err(|e| e.to_string())?;
            if before.leader == 0 {
                return Err("etcdserver: no leader".into());
            }
            client.move_leader(id).await.map_err(|e| e.to_string())?;
            Ok(output::move_leader(before.leader, id))
        }
        Command::Region { command } => region(&client, format, command).await,
        Command::Store { command } => store(&client, format, command).await,
    }
}

async fn store(client: &Client, format: Format, command: StoreCommand) -> Result<Vec<u8>, String> {
    match command {
        StoreCommand::List => {
            let list = client.store_list().await.map_err(|e| e.to_string())?;
            Ok(output::store_list(format, &list))
        }
        StoreCommand::Delete { id } => {
            let st = client.store_delete(id).await.map_err(|e| e.to_string())?;
            Ok(output::store_state(format, id, &st))
        }
        StoreCommand::Up { id } => {
            let st = client.store_set_up(id).await.map_err(|e| e.to_string())?;
            Ok(output::store_state(format, id, &st))
        }
    }
}

async fn region(
    client: &Client,
    format: Format,
    command: RegionCommand,
) -> Result<Vec<u8>, String> {
    match command {
        RegionCommand::List => {
            let list = client.region_list().await.map_err(|e| e.to_string())?;
            Ok(output::region_list(format, &list))
        }
        RegionCommand::Split { key } => {
            let regions = client
                .region_split(key.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            Ok(output::region_split(format, &regions))
        }
    }
}

async fn member(
    client: &Client,
    format: Format,
    command: MemberCommand,
) -> Result<Vec<u8>, String> {
    match command {
        MemberCommand::List => {
            let r = client.member_list().await.map_err(|e| e.to_string())?;
            Ok(output::member_list(format, &r))
        }
        MemberCommand::Add {
            id,
            peer_urls,
            learner,
        } => {
            let addr = peer_addr(&peer_urls)?;
            let r = client
                .member_add(id, &addr, learner)
                .await
                .map_err(|e| e.to_string())?;
            Ok(output::member_add(
                format,
                id,
                &addr,
                learner,
                client.cluster_id(),
                &r,
            ))
        }
        MemberCommand::Remove { id } => {
            let r = client.member_remove(id).await.map_err(|e| e.to_string())?;
            Ok(output::member_remove(format, id, client.cluster_id(), &r))
        }
    }
}

/// A command-line error as etcdctl words it: `Error: ` and clap's first paragraph on one
/// line (no usage block), for exit code 1.
fn usage_error(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.split("\n\n").next().unwrap_or_default();
    let line = first
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    format!("Error: {}", line.strip_prefix("error: ").unwrap_or(&line))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit();
            }
            eprintln!("{}", usage_error(&e));
            return ExitCode::FAILURE;
        }
    };
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
    fn ids_in_decimal_or_hex() {
        assert_eq!(parse_id("10"), Ok(10));
        assert_eq!(parse_id("0x10"), Ok(16));
        assert_eq!(parse_id("a"), Ok(10));
        assert_eq!(parse_id("ced000fda4d05edf"), Ok(0xced000fda4d05edf));
        assert!(parse_id("0").is_err());
        assert!(parse_id("xyz").is_err());
    }

    #[test]
    fn peer_urls() {
        assert_eq!(peer_addr("10.0.0.4:2380"), Ok("10.0.0.4:2380".to_string()));
        assert_eq!(peer_addr("http://h:2380/"), Ok("h:2380".to_string()));
        assert!(peer_addr("a:1,b:2").is_err());
        assert!(peer_addr("").is_err());
        assert!(peer_addr("host").is_err());
    }

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
