//! Fluent Bit's command line: `-c FILE`, pipeline flags (`-i`, `-F`, `-o`, `-p`, `-m`,
//! `-t`), service flags and actions. Fluent Bit: src/fluent-bit.c

use std::path::PathBuf;

use crate::config::{Entry, PluginKind, Section, SectionKind, Span};

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Run,
    Version,
    Help,
    /// `-i NAME -h`: the help page of the last plugin given.
    PluginHelp(PluginKind, String),
}

/// The parsed command line.
#[derive(Debug)]
pub struct Cli {
    pub action: Action,
    pub config: Option<PathBuf>,
    /// `-i/-F/-o` sections, in order; they go before the file's sections.
    pub sections: Vec<Section>,
    /// `[SERVICE]` entries from flags; the file's `[SERVICE]` overrides them.
    pub service: Vec<Entry>,
    pub dry_run: bool,
    /// Number of `-v`.
    pub verbose: u8,
    pub quiet: bool,
    pub workdir: Option<PathBuf>,
}

/// A usage error: printed with the help text, exit code 1.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

const WITH_ARG: &[(char, &str)] = &[
    ('b', "storage_path"),
    ('c', "config"),
    ('f', "flush"),
    ('C', "custom"),
    ('i', "input"),
    ('m', "match"),
    ('o', "output"),
    ('R', "parser"),
    ('F', "filter"),
    ('p', "prop"),
    ('e', "plugin"),
    ('t', "tag"),
    ('T', "sp-task"),
    ('l', "log_file"),
    ('w', "workdir"),
    ('L', "http_listen"),
    ('P', "http_port"),
    ('s', "coro_stack_size"),
    ('M', "windows_maxstdio"),
];
const NO_ARG: &[(char, &str)] = &[
    ('d', "daemon"),
    ('D', "dry-run"),
    ('v', "verbose"),
    ('q', "quiet"),
    ('V', "version"),
    ('h', "help"),
    ('H', "http"),
    ('Y', "enable-hot-reload"),
    ('W', "disable-thread-safety-on-hot-reload"),
    ('S', "sosreport"),
    ('Z', "enable-chunk-trace"),
];

fn span(flag: char, value: &str) -> Span {
    Span::new(format!("command line (-{flag} {value})"), 0)
}

/// Splits `args` (without argv[0]) into (flag, value) pairs, getopt-style:
/// `-c FILE`, `-cFILE`, `--config FILE`, `--config=FILE`, `-vv`.
fn tokens(args: &[String]) -> Result<Vec<(char, Option<String>)>, UsageError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let name = match name {
                "http_server" => "http",
                "http_port" | "port" => "http_port",
                "disable-thread-safety-on-hot-reloading" => "disable-thread-safety-on-hot-reload",
                n => n,
            };
            if let Some((c, _)) = WITH_ARG.iter().find(|(_, n)| *n == name) {
                let v = match inline {
                    Some(v) => v,
                    None if i < args.len() => {
                        i += 1;
                        args[i - 1].clone()
                    }
                    None => {
                        return Err(UsageError(format!(
                            "agent: option '--{name}' requires an argument"
                        )))
                    }
                };
                out.push((*c, Some(v)));
            } else if let Some((c, _)) = NO_ARG.iter().find(|(_, n)| *n == name) {
                out.push((*c, None));
            } else {
                return Err(UsageError(format!("agent: unrecognized option '{a}'")));
            }
        } else if let Some(short) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            let chars: Vec<char> = short.chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                if WITH_ARG.iter().any(|(x, _)| *x == c) {
                    let rest: String = chars[j..].iter().collect();
                    let v = if !rest.is_empty() {
                        rest
                    } else if i < args.len() {
                        i += 1;
                        args[i - 1].clone()
                    } else {
                        return Err(UsageError(format!(
                            "agent: option requires an argument -- '{c}'"
                        )));
                    };
                    out.push((c, Some(v)));
                    break;
                } else if NO_ARG.iter().any(|(x, _)| *x == c) {
                    out.push((c, None));
                } else {
                    return Err(UsageError(format!("agent: invalid option -- '{c}'")));
                }
            }
        } else {
            return Err(UsageError(format!("agent: unexpected argument '{a}'")));
        }
    }
    Ok(out)
}

fn unsupported(flag: char, what: &str) -> UsageError {
    UsageError(format!(
        "agent: option -{flag} ({what}) is not supported by agent"
    ))
}

pub fn parse(args: &[String]) -> Result<Cli, UsageError> {
    let mut cli = Cli {
        action: Action::Run,
        config: None,
        sections: Vec::new(),
        service: Vec::new(),
        dry_run: false,
        verbose: 0,
        quiet: false,
        workdir: None,
    };
    let mut help = false;
    let mut last: Option<(PluginKind, String)> = None;
    for (flag, value) in tokens(args)? {
        let v = value.unwrap_or_default();
        let service = |cli: &mut Cli, key: &str, value: &str| {
            cli.service.push(Entry {
                key: key.into(),
                value: value.into(),
                span: span(flag, value),
            });
        };
        match flag {
            'c' => cli.config = Some(PathBuf::from(&v)),
            'i' | 'F' | 'o' => {
                let (kind, sk) = match flag {
                    'i' => (PluginKind::Input, SectionKind::Input),
                    'F' => (PluginKind::Filter, SectionKind::Filter),
                    _ => (PluginKind::Output, SectionKind::Output),
                };
                // `-o tcp://127.0.0.1:9090` = name tcp, host, port.
                let (name, addr) = match v.split_once("://") {
                    Some((n, a)) => (n.to_string(), Some(a.to_string())),
                    None => (v.clone(), None),
                };
                let sp = span(flag, &v);
                let mut entries = vec![Entry {
                    key: "name".into(),
                    value: name.clone(),
                    span: sp.clone(),
                }];
                if let Some(addr) = addr.filter(|a| !a.is_empty()) {
                    let (host, port) = match addr.rsplit_once(':') {
                        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                            (h.to_string(), Some(p.to_string()))
                        }
                        _ => (addr.clone(), None),
                    };
                    if !host.is_empty() {
                        entries.push(Entry {
                            key: "host".into(),
                            value: host,
                            span: sp.clone(),
                        });
                    }
                    if let Some(port) = port {
                        entries.push(Entry {
                            key: "port".into(),
                            value: port,
                            span: sp.clone(),
                        });
                    }
                }
                cli.sections.push(Section {
                    kind: sk,
                    header: sk_name(sk).into(),
                    span: sp,
                    entries,
                    processors: Vec::new(),
                });
                last = Some((kind, name));
            }
            'p' | 'm' | 't' => {
                let (key, value) = match flag {
                    'p' => match v.split_once('=') {
                        Some((k, val)) => (k.trim().to_ascii_lowercase(), val.trim().to_string()),
                        None => {
                            return Err(UsageError(format!("agent: -p takes KEY=VALUE, got '{v}'")))
                        }
                    },
                    'm' => ("match".to_string(), v.clone()),
                    _ => ("tag".to_string(), v.clone()),
                };
                let Some(section) = cli.sections.last_mut() else {
                    return Err(UsageError(format!(
                        "agent: -{flag} {v} must follow the -i, -F or -o it applies to"
                    )));
                };
                if flag == 'm' && section.kind == SectionKind::Input {
                    return Err(UsageError(format!(
                        "agent: -m {v} applies to a filter or an output, not to an input"
                    )));
                }
                section.entries.push(Entry {
                    key,
                    value,
                    span: span(flag, &v),
                });
            }
            'f' => service(&mut cli, "flush", &v),
            'l' => service(&mut cli, "log_file", &v),
            'b' => service(&mut cli, "storage.path", &v),
            'H' => service(&mut cli, "http_server", "on"),
            'P' => service(&mut cli, "http_port", &v),
            'L' => service(&mut cli, "http_listen", &v),
            'Y' => service(&mut cli, "hot_reload", "on"),
            'W' => service(&mut cli, "hot_reload.ensure_thread_safety", "off"),
            'D' => cli.dry_run = true,
            'v' => cli.verbose = cli.verbose.saturating_add(1),
            'q' => cli.quiet = true,
            'V' => cli.action = Action::Version,
            'h' => help = true,
            'w' => cli.workdir = Some(PathBuf::from(&v)),
            's' | 'M' | 'Z' => {} // coroutine stack, Windows stdio, chunk trace: nothing to do here
            'd' => {
                return Err(unsupported(
                    flag,
                    "daemon; run agent under a supervisor such as systemd",
                ))
            }
            'R' => service(&mut cli, "parsers_file", &v),
            'e' => return Err(unsupported(flag, "external plugins")),
            'T' => return Err(unsupported(flag, "stream processor")),
            'C' => return Err(unsupported(flag, "custom plugins")),
            'S' => return Err(unsupported(flag, "sosreport")),
            _ => unreachable!("every flag in WITH_ARG/NO_ARG is handled"),
        }
    }
    if help {
        cli.action = match last {
            Some((kind, name)) => Action::PluginHelp(kind, name),
            None => Action::Help,
        };
    }
    Ok(cli)
}

fn sk_name(k: SectionKind) -> &'static str {
    match k {
        SectionKind::Input => "INPUT",
        SectionKind::Filter => "FILTER",
        _ => "OUTPUT",
    }
}

/// The `--help` text.
pub fn help_text() -> String {
    let mut s = String::from(
        "Usage: agent [OPTION]\n\n\
\x1b[1mAvailable Options\x1b[0m\n\
  -c  --config=FILE       specify an optional configuration file\n\
  -D, --dry-run           validate the configuration and exit\n\
  -f, --flush=SECONDS     flush timeout in seconds (default: 1)\n\
  -i, --input=INPUT       set an input (NAME or NAME://HOST:PORT)\n\
  -F  --filter=FILTER     set a filter\n\
  -m, --match=MATCH       set plugin match, same as '-p match=abc'\n\
  -o, --output=OUTPUT     set an output (NAME or NAME://HOST:PORT)\n\
  -p, --prop=\"A=B\"        set plugin configuration property\n\
  -l, --log_file=FILE     write log info to a file\n\
  -t, --tag=TAG           set plugin tag, same as '-p tag=abc'\n\
  -v, --verbose           increase logging verbosity (default: info)\n\
  -vv                     trace mode\n\
  -w, --workdir           set the working directory\n\
  -q, --quiet             quiet mode\n\
  -V, --version           show version number\n\
  -h, --help              print this help (after -i/-F/-o NAME: that plugin's properties)\n\n\
Time values (flush is in seconds) take Fluent Bit's forms 10, 5m, 2h, 1d, and also\n\
500ms, 1h30m or 1.5m, which Fluent Bit would silently misread (500ms as 500 seconds).\n\
Sizes are decimal as in Fluent Bit: 5M = 5,000,000 bytes.\n",
    );
    let section = |s: &mut String, title: &str, items: Vec<(&str, &str)>| {
        s.push_str(&format!("\n\x1b[1m{title}\x1b[0m\n"));
        for (n, d) in items {
            s.push_str(&format!("  {n:<24}{d}\n"));
        }
    };
    use crate::plugins::{FILTERS, INPUTS, OUTPUTS};
    section(
        &mut s,
        "Inputs",
        INPUTS.iter().map(|p| (p.name, p.description)).collect(),
    );
    section(
        &mut s,
        "Filters",
        FILTERS.iter().map(|p| (p.name, p.description)).collect(),
    );
    section(
        &mut s,
        "Outputs",
        OUTPUTS.iter().map(|p| (p.name, p.description)).collect(),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn pipeline_flags() {
        let cli = parse(&args(
            "-i random -p samples=3 -t r -o stdout -m * -p format=json_lines -f 0.5",
        ))
        .unwrap();
        assert_eq!(cli.sections.len(), 2);
        let keys: Vec<_> = cli.sections[0]
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(keys, [("name", "random"), ("samples", "3"), ("tag", "r")]);
        let keys: Vec<_> = cli.sections[1]
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            keys,
            [("name", "stdout"), ("match", "*"), ("format", "json_lines")]
        );
        assert_eq!(cli.service[0].key, "flush");
        assert_eq!(cli.action, Action::Run);
    }

    #[test]
    fn url_outputs_and_getopt_forms() {
        let cli = parse(&args("-cfoo.conf -o tcp://127.0.0.1:9090 -vv --dry-run")).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("foo.conf")));
        let e = &cli.sections[0].entries;
        assert_eq!(
            (e[1].key.as_str(), e[1].value.as_str()),
            ("host", "127.0.0.1")
        );
        assert_eq!((e[2].key.as_str(), e[2].value.as_str()), ("port", "9090"));
        assert_eq!(cli.verbose, 2);
        assert!(cli.dry_run);
        let cli = parse(&args("--config=x.conf")).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("x.conf")));
    }

    #[test]
    fn help_forms() {
        assert_eq!(parse(&args("-h")).unwrap().action, Action::Help);
        assert_eq!(
            parse(&args("-i random -h")).unwrap().action,
            Action::PluginHelp(PluginKind::Input, "random".into())
        );
        assert_eq!(
            parse(&args("-o stdout --help")).unwrap().action,
            Action::PluginHelp(PluginKind::Output, "stdout".into())
        );
        assert_eq!(parse(&args("-V")).unwrap().action, Action::Version);
    }

    #[test]
    fn usage_errors() {
        assert_eq!(
            parse(&args("--no-such-flag")).unwrap_err().0,
            "agent: unrecognized option '--no-such-flag'"
        );
        assert_eq!(
            parse(&args("-c")).unwrap_err().0,
            "agent: option requires an argument -- 'c'"
        );
        assert!(parse(&args("-p a=b"))
            .unwrap_err()
            .0
            .contains("must follow"));
        assert!(parse(&args("-i random -p novalue"))
            .unwrap_err()
            .0
            .contains("KEY=VALUE"));
    }
}
