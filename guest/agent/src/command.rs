//! The command part of a request (argv or shell string, cwd, env), shared by exec, services and shells.

use crate::json::Json;
use crate::process::resolve_program;
use crate::protocol::OpError;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct CommandSpec {
    pub program: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
}

pub enum Resolved {
    Ready(CommandSpec),
    /// The program is not on PATH: exec answers 127 like a shell would.
    NotFound(String),
}

impl CommandSpec {
    /// Reads `argv` (array) or `shell` (string), `cwd` and `env` from a request header.
    pub fn from_header(header: &Json) -> Result<Resolved, OpError> {
        let argv: Vec<String> = if let Some(script) = header.get("shell").and_then(Json::as_str) {
            vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()]
        } else {
            header
                .get("argv")
                .and_then(Json::as_array)
                .ok_or_else(|| OpError::bad_request("needs argv (array of strings) or shell (string)"))?
                .iter()
                .map(|a| a.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| OpError::bad_request("argv must contain only strings"))?
        };
        if argv.is_empty() || argv[0].is_empty() {
            return Err(OpError::bad_request("argv is empty"));
        }
        let cwd = header.get("cwd").and_then(Json::as_str).unwrap_or("/").to_string();
        let mut env = base_env(&cwd);
        if let Some(extra) = header.get("env").and_then(Json::as_object) {
            for (k, v) in extra {
                let v = v.as_str().ok_or_else(|| OpError::bad_request("env values must be strings"))?;
                if k.is_empty() || k.contains('=') {
                    return Err(OpError::bad_request(&format!("invalid environment variable name {:?}", k)));
                }
                env.retain(|(name, _)| name != k);
                env.push((k.clone(), v.to_string()));
            }
        }
        let path_var = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone()).unwrap_or_default();
        let program = match resolve_program(&argv[0], &path_var, &cwd) {
            Some(p) => p,
            None => return Ok(Resolved::NotFound(argv[0].clone())),
        };
        if !std::path::Path::new(&cwd).is_dir() {
            return Err(OpError::new("not_found", &format!("working directory {} does not exist", cwd)));
        }
        Ok(Resolved::Ready(CommandSpec { program, argv, env, cwd }))
    }

    /// Like from_header, but a missing program is an error (services, shells).
    pub fn require(header: &Json) -> Result<CommandSpec, OpError> {
        match CommandSpec::from_header(header)? {
            Resolved::Ready(c) => Ok(c),
            Resolved::NotFound(name) => Err(OpError::new("not_found", &format!("{}: command not found", name))),
        }
    }
}

fn base_env(cwd: &str) -> Vec<(String, String)> {
    vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), "/root".into()),
        ("USER".into(), "root".into()),
        ("LOGNAME".into(), "root".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("PWD".into(), cwd.to_string()),
    ]
}
