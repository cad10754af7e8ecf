//! The Slurm allocation the driver runs in (`SlurmJobExecutor`): its CPUs and nodes, from
//! the variables Slurm sets in an sbatch script or salloc shell.

use crate::error::Error;

/// The size of the allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlurmAllocation {
    pub cpus: u32,
    pub nodes: u32,
}

/// The allocation the driver runs in; an error outside one.
pub(crate) fn current() -> Result<SlurmAllocation, Error> {
    let outside = || {
        Error::Config(
            "SlurmJobExecutor runs inside a Slurm allocation (an sbatch script or salloc), \
             but SLURM_JOB_ID is not set; use SlurmClusterExecutor to submit jobs instead"
                .into(),
        )
    };
    std::env::var("SLURM_JOB_ID").map_err(|_| outside())?;
    let cpus_text = std::env::var("SLURM_JOB_CPUS_PER_NODE").map_err(|_| outside())?;
    let cpus = allocation_cpus(&cpus_text).ok_or_else(|| {
        Error::Config(format!(
            "cannot read the allocation's CPUs from SLURM_JOB_CPUS_PER_NODE={cpus_text:?}"
        ))
    })?;
    let nodes = std::env::var("SLURM_JOB_NUM_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    Ok(SlurmAllocation { cpus, nodes })
}

/// Total CPUs of an allocation from `SLURM_JOB_CPUS_PER_NODE` ("4(x2),2" means 4+4+2).
fn allocation_cpus(text: &str) -> Option<u32> {
    let mut total = 0u32;
    for part in text.split(',') {
        let (cpus, times) = match part.split_once("(x") {
            Some((c, t)) => (c, t.trim_end_matches(')')),
            None => (part, "1"),
        };
        total = total.checked_add(
            cpus.trim()
                .parse::<u32>()
                .ok()?
                .checked_mul(times.parse().ok()?)?,
        )?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    #[test]
    fn allocation_cpus_reads_slurm_notation() {
        assert_eq!(super::allocation_cpus("4"), Some(4));
        assert_eq!(super::allocation_cpus("4(x2)"), Some(8));
        assert_eq!(super::allocation_cpus("4(x2),2"), Some(10));
        assert_eq!(super::allocation_cpus("x"), None);
    }
}
