//! The Flux instance the driver runs in (`FluxJobExecutor`): its nodes, cores and GPUs, from
//! `flux resource info`.

use crate::error::Error;

/// The command that sizes a Flux instance: its nodes, cores and GPUs that are up.
const FLUX_RESOURCE_INFO: [&str; 4] = ["resource", "info", "-s", "up"];

/// The size of a Flux instance, from `flux resource info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FluxResources {
    pub nodes: u32,
    pub cores: u32,
    pub gpus: u32,
}

/// Reads `flux resource info`'s one line, `"2 Nodes, 8 Cores, 0 GPUs"` (singular names are
/// accepted too). Nodes and cores must be there; GPUs count as 0 when the line has none.
pub(crate) fn parse_flux_resource_info(text: &str) -> Option<FluxResources> {
    let line = text.trim();
    if line.is_empty() || line.contains('\n') {
        return None;
    }
    let (mut nodes, mut cores, mut gpus) = (None, None, None);
    for part in line.split(',') {
        let mut words = part.split_whitespace();
        let count: u32 = words.next()?.parse().ok()?;
        let name = words.next()?.to_ascii_lowercase();
        if words.next().is_some() {
            return None;
        }
        let slot = match name.as_str() {
            "node" | "nodes" => &mut nodes,
            "core" | "cores" => &mut cores,
            "gpu" | "gpus" => &mut gpus,
            _ => return None,
        };
        if slot.replace(count).is_some() {
            return None;
        }
    }
    Some(FluxResources {
        nodes: nodes?,
        cores: cores?,
        gpus: gpus.unwrap_or(0),
    })
}

/// Runs `flux resource info -s up` and reads the instance's size; an error names the command.
pub(crate) fn current() -> Result<FluxResources, Error> {
    let shown = format!("flux {}", FLUX_RESOURCE_INFO.join(" "));
    let output = std::process::Command::new("flux")
        .args(FLUX_RESOURCE_INFO)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            Error::Config(format!(
                "FluxJobExecutor cannot run `{shown}` to size the Flux instance: {}",
                if e.kind() == std::io::ErrorKind::NotFound {
                    "flux was not found on PATH".to_string()
                } else {
                    e.to_string()
                }
            ))
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(Error::Config(format!(
            "`{shown}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let resources = parse_flux_resource_info(&stdout).ok_or_else(|| {
        Error::Config(format!(
            "`{shown}` printed {:?}; expected one line like \"2 Nodes, 8 Cores, 0 GPUs\"",
            stdout.trim_end()
        ))
    })?;
    if resources.cores == 0 || resources.nodes == 0 {
        return Err(Error::Config(format!(
            "`{shown}` reports {} cores on {} nodes up: the Flux instance has nothing to run \
             tasks on",
            resources.cores, resources.nodes
        )));
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    #[test]
    fn flux_resource_info_is_read_strictly() {
        use super::{parse_flux_resource_info as parse, FluxResources};
        let r = |nodes, cores, gpus| Some(FluxResources { nodes, cores, gpus });
        assert_eq!(parse("2 Nodes, 8 Cores, 0 GPUs\n"), r(2, 8, 0));
        assert_eq!(parse("8 Nodes, 32 Cores, 4 GPUs"), r(8, 32, 4));
        assert_eq!(parse("1 Node, 1 Core, 1 GPU"), r(1, 1, 1));
        assert_eq!(parse("  4 Nodes,  16 Cores  "), r(4, 16, 0));
        for bad in [
            "",
            "Nodes: 2",
            "2 Nodes, 8 Cores, 0 GPUs\n1 Nodes, 1 Cores, 0 GPUs",
            "2 Nodes, 0 GPUs",
            "8 Cores, 0 GPUs",
            "2 Nodes, 8 Cores, 8 Cores",
            "2 Nodes, 8 Sockets",
            "two Nodes, 8 Cores",
            "-1 Nodes, 8 Cores",
            "2 Nodes, 8 Cores, 0 GPUs, extra",
            "2 big Nodes, 8 Cores",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
