//! Tests of the Slurm output parsers, with outputs recorded on Debian 12's
//! slurm-wlm 22.05.8 (cluster-tests/start-slurm.sh: 4 nodes, MinJobAge=300,
//! MaxArraySize=10001; the sacct outputs on a second such cluster with
//! accounting). Fixtures are pasted verbatim.

use std::collections::{HashMap, HashSet};

use super::sacct::SacctEntry;
use super::scontrol::{scontrol_job_unknown, scontrol_pairs, ScontrolJob};
use super::squeue::QueueEntry;
use super::*;
use crate::backend::scheduler::{self, JobState};

/// The state squeue listed for `job` (see `scheduler::lookup_state`).
fn lookup_state(states: &HashMap<JobRef, JobState>, job: JobRef) -> Option<SlurmState> {
    scheduler::lookup_state(states, job).map(|s| s.name().parse().unwrap())
}

/// `squeue -h -r -t all -o '%i|%T|%r' right after submitting (jobs 1-9 by others)`
const SQUEUE_R_SUBMITTED: &str = r#"6|CANCELLED|None
1|COMPLETED|None
2_0|COMPLETED|None
2_1|COMPLETED|None
2_2|COMPLETED|None
7|COMPLETED|None
8|COMPLETED|None
9|COMPLETED|None
5|FAILED|NonZeroExitCode
10|PENDING|None
11_0|PENDING|None
11_1|PENDING|None
11_2|PENDING|None
11_3|PENDING|None
11_4|PENDING|None
11_5|PENDING|None
11_6|PENDING|None
11_7|PENDING|None
12|PENDING|Priority
13|PENDING|Priority
14|PENDING|Priority
15|PENDING|Dependency
16|PENDING|JobHeldUser
"#;

/// `same, ~2 s later: array 11 (--array=0-7%2) throttled, 15 never satisfiable`
const SQUEUE_R_RUNNING: &str = r#"6|CANCELLED|None
1|COMPLETED|None
2_0|COMPLETED|None
2_1|COMPLETED|None
2_2|COMPLETED|None
7|COMPLETED|None
8|COMPLETED|None
9|COMPLETED|None
10|COMPLETED|None
11_2|COMPLETED|None
11_3|COMPLETED|None
11_0|COMPLETED|None
11_1|COMPLETED|None
5|FAILED|NonZeroExitCode
12|FAILED|NonZeroExitCode
11_6|PENDING|JobArrayTaskLimit
11_7|PENDING|JobArrayTaskLimit
15|PENDING|DependencyNeverSatisfied
16|PENDING|JobHeldUser
11_4|RUNNING|None
11_5|RUNNING|None
13|RUNNING|None
14|RUNNING|None
"#;

/// `same, after scancel 13 and submitting 24 (held) and 25 (--array=1,3-5,9%1)`
const SQUEUE_R_LATER: &str = r#"6|CANCELLED|None
13|CANCELLED|None
1|COMPLETED|None
2_0|COMPLETED|None
2_1|COMPLETED|None
2_2|COMPLETED|None
7|COMPLETED|None
8|COMPLETED|None
9|COMPLETED|None
10|COMPLETED|None
11_6|COMPLETED|None
11_7|COMPLETED|None
11_4|COMPLETED|None
11_5|COMPLETED|None
11_2|COMPLETED|None
11_3|COMPLETED|None
11_0|COMPLETED|None
11_1|COMPLETED|None
5|FAILED|NonZeroExitCode
12|FAILED|NonZeroExitCode
15|PENDING|DependencyNeverSatisfied
25_3|PENDING|JobArrayTaskLimit
25_4|PENDING|JobArrayTaskLimit
25_5|PENDING|JobArrayTaskLimit
25_9|PENDING|JobArrayTaskLimit
24|PENDING|JobHeldUser
16|PENDING|JobHeldUser
14|RUNNING|None
25_1|RUNNING|None
"#;

/// `squeue -h -o '%i|%T|%r' (no -r): pending array elements folded`
const SQUEUE_NO_R: &str = r#"10|PENDING|None
11_[0-7%2]|PENDING|None
12|PENDING|Priority
13|PENDING|Priority
14|PENDING|Priority
15|PENDING|Dependency
16|PENDING|JobHeldUser
"#;

/// `squeue -h -t all -o '%i|%T|%r' -n pp-big,pp-step: --array=0-100:2%1 and 0-12:4, held`
const SQUEUE_STEPPED: &str = r#"32_[0,4,8,12]|PENDING|JobHeldUser
31_[0-100:2%1]|PENDING|JobHeldUser
"#;

/// `scontrol show job -o 11 (array 0-7%2: elements 0-5 started, 6-7 pending)`
const SCONTROL_ARRAY: &str = r#"JobId=11 ArrayJobId=11 ArrayTaskId=6-7%2 ArrayTaskThrottle=2 JobName=pp-arr UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901751 Nice=0 Account=(null) QOS=(null) JobState=PENDING Reason=JobArrayTaskLimit Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-11-22T04:11:59 EligibleTime=Unknown AccrueTime=Unknown StartTime=Unknown EndTime=Unknown Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T04:12:08 Scheduler=Main Partition=debug AllocNode:Sid=localhost:25829 ReqNodeList=(null) ExcNodeList=(null) NodeList= NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=5423M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/pitch-slurm-parse/rec StdErr=/tmp/pitch-slurm-parse/rec/slurm-11_4294967294.out StdIn=/dev/null StdOut=/tmp/pitch-slurm-parse/rec/slurm-11_4294967294.out Power= 
JobId=22 ArrayJobId=11 ArrayTaskId=5 ArrayTaskThrottle=2 JobName=pp-arr UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901751 Nice=0 Account=(null) QOS=(null) JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:02 TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-11-22T04:11:59 EligibleTime=2026-11-22T04:12:08 AccrueTime=Unknown StartTime=2026-11-22T04:12:08 EndTime=Unknown Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T04:12:08 Scheduler=Backfill Partition=debug AllocNode:Sid=localhost:25829 ReqNodeList=(null) ExcNodeList=(null) NodeList=n2 BatchHost=n2 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/pitch-slurm-parse/rec StdErr=/tmp/pitch-slurm-parse/rec/slurm-11_5.out StdIn=/dev/null StdOut=/tmp/pitch-slurm-parse/rec/slurm-11_5.out Power= 
JobId=21 ArrayJobId=11 ArrayTaskId=4 ArrayTaskThrottle=2 JobName=pp-arr UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901751 Nice=0 Account=(null) QOS=(null) JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:02 TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-11-22T04:11:59 EligibleTime=2026-11-22T04:12:08 AccrueTime=Unknown StartTime=2026-11-22T04:12:08 EndTime=Unknown Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T04:12:08 Scheduler=Backfill Partition=debug AllocNode:Sid=localhost:25829 ReqNodeList=(null) ExcNodeList=(null) NodeList=n2 BatchHost=n2 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/pitch-slurm-parse/rec StdErr=/tmp/pitch-slurm-parse/rec/slurm-11_4.out StdIn=/dev/null StdOut=/tmp/pitch-slurm-parse/rec/slurm-11_4.out Power= 
JobId=20 ArrayJobId=11 ArrayTaskId=3 ArrayTaskThrottle=2 JobName=pp-arr UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901751 Nice=0 Account=(null) QOS=(null) JobState=COMPLETED Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:03 TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-11-22T04:11:59 EligibleTime=2026-11-22T04:12:04 AccrueTime=Unknown StartTime=2026-11-22T04:12:04 EndTime=2026-11-22T04:12:07 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T04:12:04 Scheduler=Backfill Partition=debug AllocNode:Sid=localhost:25829 ReqNodeList=(null) ExcNodeList=(null) NodeList=n2 BatchHost=n2 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/pitch-slurm-parse/rec StdErr=/tmp/pitch-slurm-parse/rec/slurm-11_3.out StdIn=/dev/null StdOut=/tmp/pitch-slurm-parse/rec/slurm-11_3.out Power= 
JobId=19 ArrayJobId=11 ArrayTaskId=2 ArrayTaskThrottle=2 JobName=pp-arr UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901751 Nice=0 Account=(null) QOS=(null) JobState=COMPLETED Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:03 TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-11-22T04:11:59 EligibleTime=2026-11-22T04:12:04 AccrueTime=Unknown StartTime=2026-11-22T04:12:04 EndTime=2026-11-22T04:12:07 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T04:12:04 Scheduler=Backfill Partition=debug AllocNode:Sid=localhost:25829 ReqNodeList=(null) ExcNodeList=(null) NodeList=n2 BatchHost=n2 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/pitch-slurm-parse/rec StdErr=/tmp/pitch-slurm-parse/rec/slurm-11_2.out StdIn=/dev/null StdOut=/tmp/pitch-slurm-parse/rec/slurm-11_2.out Power= 
JobId=18 ArrayJobId=11 ArrayTaskId=1 ArrayTaskThrottle=2 JobName=pp-arr UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901751 Nice=0 Account=(null) QOS=(null) JobState=COMPLETED Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:03 TimeLimit=365-00:00:00 TimeMin=N/A SubmitTime=2026-11-22T04:11:59 EligibleTime=2026-11-22T04:12:00 AccrueTime=Unknown StartTime=2026-11-22T04:12:00 EndTime=2026-11-22T04:12:03 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T04:12:00 Scheduler=Backfill Partition=debug AllocNode:Sid=localhost:25829 ReqNodeList=(null) ExcNodeList=(null) NodeList=n1 BatchHost=n1 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/pitch-slurm-parse/rec StdErr=/tmp/pitch-slurm-parse/rec/slurm-11_1.out StdIn=/dev/null StdOut=/tmp/pitch-slurm-parse/rec/slurm-11_1.out Power= 
JobId=17 ArrayJobId=11 ArrayTaskId=0 ArrayTaskThrottle=2 JobName=pp-arr UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901751 Nice=0 Account=(null) QOS=(null) JobState=COMPLETED Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:03 TimeLimit=365-00:00:00 TimeMin=N/A SubmitTime=2026-11-22T04:11:59 EligibleTime=2026-11-22T04:12:00 AccrueTime=Unknown StartTime=2026-11-22T04:12:00 EndTime=2026-11-22T04:12:03 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T04:12:00 Scheduler=Backfill Partition=debug AllocNode:Sid=localhost:25829 ReqNodeList=(null) ExcNodeList=(null) NodeList=n1 BatchHost=n1 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/pitch-slurm-parse/rec StdErr=/tmp/pitch-slurm-parse/rec/slurm-11_0.out StdIn=/dev/null StdOut=/tmp/pitch-slurm-parse/rec/slurm-11_0.out Power= 
"#;

/// `scontrol show job -o 13 while running (cancelled afterwards)`
const SCONTROL_CANCELLED: &str = r#"JobId=13 JobName=pp-cancel UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901749 Nice=0 Account=(null) QOS=(null) JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:10 TimeLimit=365-00:00:00 TimeMin=N/A SubmitTime=2026-11-22T04:11:59 EligibleTime=2026-11-22T04:11:59 AccrueTime=2026-11-22T04:11:59 StartTime=2026-11-22T04:12:00 EndTime=2027-11-22T04:12:00 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T04:12:00 Scheduler=Backfill Partition=debug AllocNode:Sid=localhost:25829 ReqNodeList=(null) ExcNodeList=(null) NodeList=n2 BatchHost=n2 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/pitch-slurm-parse/rec StdErr=/tmp/pitch-slurm-parse/rec/slurm-13.out StdIn=/dev/null StdOut=/tmp/pitch-slurm-parse/rec/slurm-13.out Power= 
"#;

/// `scontrol show job -o 14 (--time=0:01, sleep 200)`
const SCONTROL_TIMEOUT: &str = r#"JobId=14 JobName=pp-time UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901748 Nice=0 Account=(null) QOS=(null) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:15 RunTime=00:01:17 TimeLimit=00:01:00 TimeMin=N/A SubmitTime=2026-11-22T04:11:59 EligibleTime=2026-11-22T04:11:59 AccrueTime=2026-11-22T04:11:59 StartTime=2026-11-22T04:12:00 EndTime=2026-11-22T04:13:17 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T04:12:00 Scheduler=Backfill Partition=debug AllocNode:Sid=localhost:25829 ReqNodeList=(null) ExcNodeList=(null) NodeList=n2 BatchHost=n2 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/pitch-slurm-parse/rec StdErr=/tmp/pitch-slurm-parse/rec/slurm-14.out StdIn=/dev/null StdOut=/tmp/pitch-slurm-parse/rec/slurm-14.out Power= 
"#;

/// `scontrol show job -o 24: -J 'my job=x y' --comment 'a=b c Reason=fake' -H s.sh arg1 'two words' Key=val`
const SCONTROL_TRICKY: &str = r#"JobId=24 JobName=my job=x y UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=0 Nice=0 Account=(null) QOS=(null) JobState=PENDING Reason=JobHeldUser Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-11-22T04:12:21 EligibleTime=Unknown AccrueTime=Unknown StartTime=Unknown EndTime=Unknown Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T04:12:21 Scheduler=Main Partition=debug AllocNode:Sid=localhost:25829 ReqNodeList=(null) ExcNodeList=(null) NodeList= NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=5423M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=/tmp/pitch-slurm-parse/rec/s.sh arg1 two words Key=val WorkDir=/tmp/pitch-slurm-parse/rec Comment=a=b c Reason=fake  StdErr=/tmp/pitch-slurm-parse/rec/slurm-24.out StdIn=/dev/null StdOut=/tmp/pitch-slurm-parse/rec/slurm-24.out Power= 
"#;

/// `scontrol show job 15 (no -o; afterok on the failing job 12)`
const SCONTROL_MULTILINE: &str = r#"JobId=15 JobName=pp-dep
   UserId=root(0) GroupId=root(0) MCS_label=N/A
   Priority=4294901747 Nice=0 Account=(null) QOS=(null)
   JobState=PENDING Reason=DependencyNeverSatisfied Dependency=afterok:12(failed)
   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0
   RunTime=00:00:00 TimeLimit=UNLIMITED TimeMin=N/A
   SubmitTime=2026-11-22T04:11:59 EligibleTime=Unknown
   AccrueTime=Unknown
   StartTime=Unknown EndTime=Unknown Deadline=N/A
   SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T04:11:59 Scheduler=Main
   Partition=debug AllocNode:Sid=localhost:25829
   ReqNodeList=(null) ExcNodeList=(null)
   NodeList=
   NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:*
   TRES=cpu=1,mem=5423M,node=1,billing=1
   Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=*
   MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0
   Features=(null) DelayBoot=00:00:00
   OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null)
   Command=(null)
   WorkDir=/tmp/pitch-slurm-parse/rec
   StdErr=/tmp/pitch-slurm-parse/rec/slurm-15.out
   StdIn=/dev/null
   StdOut=/tmp/pitch-slurm-parse/rec/slurm-15.out
   Power=
   

"#;

/// `sacct -X -n -P -o JobID,State,ExitCode -j 1,...,8 (3 exits 3, 4 scancelled, 7 kill -9 $$)`
const SACCT_EARLY: &str = r#"1|COMPLETED|0:0
3|FAILED|3:0
4|CANCELLED by 0|0:0
5|RUNNING|0:0
6|PENDING|0:0
7|FAILED|0:9
8|COMPLETED|0:0
2_0|COMPLETED|0:0
2_1|COMPLETED|0:0
2_[2-5%2]|PENDING|0:0
"#;

/// `sacct -n -P -o JobID,State,ExitCode -j 1,2,3,4 (no -X: steps listed)`
const SACCT_STEPS: &str = r#"1|COMPLETED|0:0
1.batch|COMPLETED|0:0
3|FAILED|3:0
3.batch|FAILED|3:0
4|CANCELLED by 0|0:0
4.batch|CANCELLED|0:15
2_0|COMPLETED|0:0
2_0.batch|COMPLETED|0:0
2_1|COMPLETED|0:0
2_1.batch|COMPLETED|0:0
2_[2-5%2]|PENDING|0:0
"#;

/// `sacct -X -n -P -o JobID,State,ExitCode -j 1,...,8 later (5 hit --time=0:01)`
const SACCT_FINAL: &str = r#"1|COMPLETED|0:0
3|FAILED|3:0
4|CANCELLED by 0|0:0
5|TIMEOUT|0:0
6|PENDING|0:0
7|FAILED|0:9
8|COMPLETED|0:0
2_0|COMPLETED|0:0
2_1|COMPLETED|0:0
2_2|COMPLETED|0:0
2_3|COMPLETED|0:0
2_4|COMPLETED|0:0
2_5|COMPLETED|0:0
"#;

/// `scontrol show config`
const SCONTROL_CONFIG: &str = r#"Configuration data as of 2026-11-22T04:12:55
AccountingStorageBackupHost = (null)
AccountingStorageEnforce = none
AccountingStorageHost   = localhost
AccountingStorageExternalHost = (null)
AccountingStorageParameters = (null)
AccountingStoragePort   = 0
AccountingStorageTRES   = cpu,mem,energy,node,billing,fs/disk,vmem,pages
AccountingStorageType   = accounting_storage/none
AccountingStorageUser   = root
AccountingStoreFlags    = (null)
AcctGatherEnergyType    = acct_gather_energy/none
AcctGatherFilesystemType = acct_gather_filesystem/none
AcctGatherInterconnectType = acct_gather_interconnect/none
AcctGatherNodeFreq      = 0 sec
AcctGatherProfileType   = acct_gather_profile/none
AllowSpecResourcesUsage = No
AuthAltTypes            = (null)
AuthAltParameters       = (null)
AuthInfo                = (null)
AuthType                = auth/munge
BatchStartTimeout       = 10 sec
BcastExclude            = /lib,/usr/lib,/lib64,/usr/lib64
BcastParameters         = (null)
BOOT_TIME               = 2026-11-22T04:11:47
BurstBufferType         = (null)
CliFilterPlugins        = (null)
ClusterName             = pitch
CommunicationParameters = NoInAddrAny,NoCtldInAddrAny
CompleteWait            = 0 sec
CoreSpecPlugin          = core_spec/none
CpuFreqDef              = Unknown
CpuFreqGovernors        = OnDemand,Performance,UserSpace
CredType                = cred/munge
DebugFlags              = (null)
DefMemPerNode           = UNLIMITED
DependencyParameters    = (null)
DisableRootJobs         = No
EioTimeout              = 60
EnforcePartLimits       = NO
Epilog                  = (null)
EpilogMsgTime           = 2000 usec
EpilogSlurmctld         = (null)
ExtSensorsType          = ext_sensors/none
ExtSensorsFreq          = 0 sec
FederationParameters    = (null)
FirstJobId              = 1
GetEnvTimeout           = 2 sec
GresTypes               = (null)
GpuFreqDef              = high,memory=high
GroupUpdateForce        = 1
GroupUpdateTime         = 600 sec
HASH_VAL                = Match
HealthCheckInterval     = 0 sec
HealthCheckNodeState    = ANY
HealthCheckProgram      = (null)
InactiveLimit           = 0 sec
InteractiveStepOptions  = --interactive --preserve-env --pty $SHELL
JobAcctGatherFrequency  = 30
JobAcctGatherType       = jobacct_gather/none
JobAcctGatherParams     = (null)
JobCompHost             = localhost
JobCompLoc              = /tmp/pitch-slurm/log/jobcomp.txt
JobCompPort             = 0
JobCompType             = jobcomp/filetxt
JobCompUser             = root
JobContainerType        = job_container/none
JobCredentialPrivateKey = (null)
JobCredentialPublicCertificate = (null)
JobDefaults             = (null)
JobFileAppend           = 0
JobRequeue              = 1
JobSubmitPlugins        = (null)
KillOnBadExit           = 0
KillWait                = 5 sec
LaunchParameters        = (null)
LaunchType              = launch/slurm
Licenses                = (null)
LogTimeFormat           = iso8601_ms
MailDomain              = (null)
MailProg                = /bin/true
MaxArraySize            = 10001
MaxDBDMsgs              = 0
MaxJobCount             = 100000
MaxJobId                = 67043328
MaxMemPerNode           = UNLIMITED
MaxNodeCount            = 4
MaxStepCount            = 40000
MaxTasksPerNode         = 512
MCSPlugin               = mcs/none
MCSParameters           = (null)
MessageTimeout          = 10 sec
MinJobAge               = 300 sec
MpiDefault              = pmix
MpiParams               = (null)
MULTIPLE_SLURMD         = Yes
NEXT_JOB_ID             = 31
NodeFeaturesPlugins     = (null)
OverTimeLimit           = 0 min
PluginDir               = /usr/lib/x86_64-linux-gnu/slurm-wlm
PlugStackConfig         = (null)
PowerParameters         = (null)
PowerPlugin             = 
PreemptMode             = OFF
PreemptType             = preempt/none
PreemptExemptTime       = 00:00:00
PrEpParameters          = (null)
PrEpPlugins             = prep/script
PriorityParameters      = (null)
PrioritySiteFactorParameters = (null)
PrioritySiteFactorPlugin = (null)
PriorityType            = priority/basic
PrivateData             = none
ProctrackType           = proctrack/linuxproc
Prolog                  = (null)
PrologEpilogTimeout     = 65534
PrologSlurmctld         = (null)
PrologFlags             = (null)
PropagatePrioProcess    = 0
PropagateResourceLimits = ALL
PropagateResourceLimitsExcept = (null)
RebootProgram           = (null)
ReconfigFlags           = (null)
RequeueExit             = (null)
RequeueExitHold         = (null)
ResumeFailProgram       = (null)
ResumeProgram           = (null)
ResumeRate              = 300 nodes/min
ResumeTimeout           = 60 sec
ResvEpilog              = (null)
ResvOverRun             = 0 min
ResvProlog              = (null)
ReturnToService         = 2
RoutePlugin             = route/default
SchedulerParameters     = batch_sched_delay=0,sched_min_interval=0,sched_interval=1,bf_interval=1,default_queue_depth=1000
SchedulerTimeSlice      = 30 sec
SchedulerType           = sched/backfill
ScronParameters         = (null)
SelectType              = select/cons_tres
SelectTypeParameters    = CR_CORE
SlurmUser               = root(0)
SlurmctldAddr           = (null)
SlurmctldDebug          = info
SlurmctldHost[0]        = vm(127.0.0.1)
SlurmctldLogFile        = /tmp/pitch-slurm/log/slurmctld.log
SlurmctldPort           = 6817
SlurmctldSyslogDebug    = (null)
SlurmctldPrimaryOffProg = (null)
SlurmctldPrimaryOnProg  = (null)
SlurmctldTimeout        = 120 sec
SlurmctldParameters     = (null)
SlurmdDebug             = info
SlurmdLogFile           = /tmp/pitch-slurm/log/slurmd-%n.log
SlurmdParameters        = config_overrides
SlurmdPidFile           = /tmp/pitch-slurm/run/slurmd-%n.pid
SlurmdPort              = 6818
SlurmdSpoolDir          = /tmp/pitch-slurm/spool/slurmd-%n
SlurmdSyslogDebug       = (null)
SlurmdTimeout           = 300 sec
SlurmdUser              = root(0)
SlurmSchedLogFile       = (null)
SlurmSchedLogLevel      = 0
SlurmctldPidFile        = /tmp/pitch-slurm/run/slurmctld.pid
SlurmctldPlugstack      = (null)
SLURM_CONF              = /tmp/pitch-slurm/etc/slurm.conf
SLURM_VERSION           = 22.05.8
SrunEpilog              = (null)
SrunPortRange           = 0-0
SrunProlog              = (null)
StateSaveLocation       = /tmp/pitch-slurm/state
SuspendExcNodes         = (null)
SuspendExcParts         = (null)
SuspendProgram          = (null)
SuspendRate             = 60 nodes/min
SuspendTime             = INFINITE
SuspendTimeout          = 30 sec
SwitchParameters        = (null)
SwitchType              = switch/none
TaskEpilog              = (null)
TaskPlugin              = task/none
TaskPluginParam         = (null type)
TaskProlog              = (null)
TCPTimeout              = 2 sec
TmpFS                   = /tmp/pitch-slurm/tmp/%n
TopologyParam           = (null)
TopologyPlugin          = topology/none
TrackWCKey              = No
TreeWidth               = 50
UsePam                  = No
UnkillableStepProgram   = (null)
UnkillableStepTimeout   = 60 sec
VSizeFactor             = 0 percent
WaitTime                = 0 sec
X11Parameters           = (null)

MPI Plugins Configuration:
PMIxCliTmpDirBase       = (null)
PMIxCollFence           = (null)
PMIxDebug               = 0
PMIxDirectConn          = yes
PMIxDirectConnEarly     = no
PMIxDirectConnUCX       = no
PMIxDirectSameArch      = no
PMIxEnv                 = (null)
PMIxFenceBarrier        = no
PMIxNetDevicesUCX       = (null)
PMIxTimeout             = 300
PMIxTlsUCX              = (null)

Slurmctld(primary) at vm is UP
"#;

fn job(job_id: u64) -> JobRef {
    JobRef {
        job_id,
        array_index: None,
    }
}

fn elem(job_id: u64, index: u32) -> JobRef {
    JobRef {
        job_id,
        array_index: Some(index),
    }
}

#[test]
fn state_names_round_trip() {
    assert_eq!(SlurmState::ALL.len(), 24);
    for s in SlurmState::ALL {
        assert_eq!(s.name().parse::<SlurmState>(), Ok(s));
        assert_eq!(s.to_string(), s.name());
    }
    let names: HashSet<&str> = SlurmState::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(names.len(), 24);
}

#[test]
fn state_long_names() {
    assert_eq!("OUT_OF_MEMORY".parse(), Ok(SlurmState::OutOfMemory));
    assert_eq!("NODE_FAIL".parse(), Ok(SlurmState::NodeFail));
    assert_eq!("RESV_DEL_HOLD".parse(), Ok(SlurmState::ResvDelHold));
    assert_eq!("CANCELLED by 0".parse(), Ok(SlurmState::Cancelled));
    assert_eq!("CANCELLED by 12345".parse(), Ok(SlurmState::Cancelled));
}

#[test]
fn unknown_states_are_errors() {
    for bad in [
        "",
        "pending",
        "Running",
        "CANCELLED+",
        "CANCELLED by",
        "CANCELLED by root",
        "BOGUS",
        " RUNNING",
    ] {
        assert_eq!(
            bad.parse::<SlurmState>(),
            Err(ParseError::UnknownState(bad.into())),
            "{bad:?}"
        );
    }
    assert_eq!(
        "BOGUS".parse::<SlurmState>().unwrap_err().to_string(),
        "unknown slurm job state \"BOGUS\""
    );
}

#[test]
fn finished_states_and_their_end_reasons() {
    let finished: Vec<&str> = SlurmState::ALL
        .iter()
        .filter(|s| s.is_finished())
        .map(|s| s.name())
        .collect();
    assert_eq!(
        finished,
        [
            "BOOT_FAIL",
            "CANCELLED",
            "COMPLETED",
            "DEADLINE",
            "FAILED",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
            "PREEMPTED",
            "REVOKED",
            "SPECIAL_EXIT",
            "TIMEOUT"
        ]
    );
    // The one mapping into pitch's end reasons: every finished state has one, and those
    // pitch has a name for keep Slurm's.
    for s in SlurmState::ALL {
        match JobState::from(s) {
            JobState::Active(name) => assert!(!s.is_finished() && name == s.name()),
            JobState::Stuck(_) => panic!("a state alone is never stuck"),
            JobState::Ended(reason) => {
                assert!(s.is_finished());
                assert_eq!(reason.as_str(), s.name());
                let known = !matches!(reason, crate::scheduler::EndReason::Unknown(_));
                assert_eq!(
                    known,
                    !matches!(s, SlurmState::Revoked | SlurmState::SpecialExit)
                );
            }
        }
    }
}

#[test]
fn job_ref_display_and_parse() {
    assert_eq!(job(123).to_string(), "123");
    assert_eq!(elem(123, 4).to_string(), "123_4");
    assert_eq!("123".parse(), Ok(job(123)));
    assert_eq!("123_4".parse(), Ok(elem(123, 4)));
    for bad in [
        "",
        "_4",
        "123_",
        "123_[5-9]",
        "123.batch",
        "12 3",
        "-1",
        "+1",
        "123_4_5",
        "123+0",
    ] {
        assert_eq!(
            bad.parse::<JobRef>(),
            Err(crate::scheduler::SchedulerError::InvalidJobId(bad.into())),
            "{bad:?}"
        );
    }
    assert!(job(9) < elem(9, 0) && elem(9, 1) < elem(9, 2) && elem(9, 2) < job(10));
}

#[test]
fn sbatch_parsable() {
    // `sbatch --parsable -J pp-ok --wrap 'sleep 1'` printed "10\n".
    assert_eq!(parse_sbatch_parsable("10\n"), Ok(10));
    assert_eq!(parse_sbatch_parsable("  4242;pitch \n"), Ok(4242));
    for bad in [
        "",
        "\n",
        "abc",
        "12;",
        "12;a b",
        "12 13",
        "Submitted batch job 12",
        "sbatch: error: Batch job submission failed: Invalid partition name specified",
    ] {
        assert_eq!(
            parse_sbatch_parsable(bad),
            Err(ParseError::Sbatch(bad.into())),
            "{bad:?}"
        );
    }
    assert_eq!(
        parse_sbatch_parsable("oops").unwrap_err().to_string(),
        "sbatch --parsable: expected \"<jobid>\" or \"<jobid>;<cluster>\", got \"oops\""
    );
}

#[test]
fn squeue_with_r_lists_every_element() {
    let q = parse_squeue(SQUEUE_R_SUBMITTED).unwrap();
    assert_eq!(q.len(), 23);
    assert_eq!(
        q[0],
        QueueEntry {
            job: job(6),
            state: SlurmState::Cancelled,
            reason: None
        }
    );
    assert_eq!(q[8].state, SlurmState::Failed);
    assert_eq!(q[8].reason.as_deref(), Some("NonZeroExitCode"));
    let pending: Vec<JobRef> = q
        .iter()
        .filter(|e| e.job.job_id == 11)
        .map(|e| e.job)
        .collect();
    assert_eq!(pending, (0..8).map(|i| elem(11, i)).collect::<Vec<_>>());
    assert_eq!(q[22].reason.as_deref(), Some("JobHeldUser"));

    let q = parse_squeue(SQUEUE_R_RUNNING).unwrap();
    let states = states_by_job(&q);
    assert_eq!(
        lookup_state(&states, elem(11, 4)),
        Some(SlurmState::Running)
    );
    assert_eq!(
        lookup_state(&states, elem(11, 0)),
        Some(SlurmState::Completed)
    );
    assert_eq!(
        lookup_state(&states, elem(11, 7)),
        Some(SlurmState::Pending)
    );
    assert_eq!(lookup_state(&states, elem(11, 8)), None);
    assert_eq!(lookup_state(&states, job(12)), Some(SlurmState::Failed));
    assert_eq!(lookup_state(&states, job(99)), None);
    // the whole array: its lowest unfinished element (11_4)
    assert_eq!(lookup_state(&states, job(11)), Some(SlurmState::Running));
    let dep = q.iter().find(|e| e.job == job(15)).unwrap();
    assert_eq!(dep.reason.as_deref(), Some("DependencyNeverSatisfied"));
    let limited = q.iter().find(|e| e.job == elem(11, 6)).unwrap();
    assert_eq!(limited.reason.as_deref(), Some("JobArrayTaskLimit"));

    let q = parse_squeue(SQUEUE_R_LATER).unwrap();
    let states = states_by_job(&q);
    assert_eq!(lookup_state(&states, job(13)), Some(SlurmState::Cancelled));
    assert_eq!(
        lookup_state(&states, elem(25, 1)),
        Some(SlurmState::Running)
    );
    assert_eq!(
        lookup_state(&states, elem(25, 9)),
        Some(SlurmState::Pending)
    );
    assert_eq!(lookup_state(&states, elem(25, 2)), None);
    // all elements finished: the lowest one's state
    assert_eq!(lookup_state(&states, job(11)), Some(SlurmState::Completed));
}

#[test]
fn squeue_without_r_expands_folded_elements() {
    let q = parse_squeue(SQUEUE_NO_R).unwrap();
    assert_eq!(q.len(), 6 + 8);
    let states = states_by_job(&q);
    for i in 0..8 {
        assert_eq!(
            lookup_state(&states, elem(11, i)),
            Some(SlurmState::Pending)
        );
    }
    assert_eq!(lookup_state(&states, elem(11, 8)), None);
    assert_eq!(
        q.iter()
            .filter(|e| e.reason.as_deref() == Some("Priority"))
            .count(),
        3
    );

    let q = parse_squeue(SQUEUE_STEPPED).unwrap();
    let ids: Vec<JobRef> = q
        .iter()
        .filter(|e| e.job.job_id == 32)
        .map(|e| e.job)
        .collect();
    assert_eq!(ids, [elem(32, 0), elem(32, 4), elem(32, 8), elem(32, 12)]);
    let ids: Vec<u32> = q
        .iter()
        .filter(|e| e.job.job_id == 31)
        .filter_map(|e| e.job.array_index)
        .collect();
    assert_eq!(ids, (0..=100).step_by(2).collect::<Vec<u32>>());
    assert!(q.iter().all(|e| e.reason.as_deref() == Some("JobHeldUser")));
}

#[test]
fn squeue_blank_lines_and_reasons() {
    let q = parse_squeue(
        "\n  \n7|RUNNING|None\n\n8|PENDING|launch failed requeued held\n9|PENDING|(null)\n",
    )
    .unwrap();
    assert_eq!(q.len(), 3);
    assert_eq!(q[1].reason.as_deref(), Some("launch failed requeued held"));
    assert_eq!(q[2].reason, None);
    assert_eq!(parse_squeue(""), Ok(vec![]));
}

#[test]
fn squeue_errors_name_the_line() {
    // squeue without -r cuts %i at its field width (recorded: "33_[0,3,...,27,3")
    let cut = "1|RUNNING|None\n33_[0,3,6,9,12,15,18,21,24,27,3|PENDING|JobHeldUser\n";
    assert_eq!(
        parse_squeue(cut),
        Err(ParseError::Line {
            command: "squeue",
            line: 2,
            reason: "invalid slurm job id \"33_[0,3,6,9,12,15,18,21,24,27,3\"".into(),
            text: "33_[0,3,6,9,12,15,18,21,24,27,3|PENDING|JobHeldUser".into(),
        })
    );
    // ... and the task id expression at 64 bytes unless SLURM_BITSTR_LEN=0 (recorded)
    let err = parse_squeue("33_[0,3,6,9,12,15,18...%1]|PENDING|JobHeldUser").unwrap_err();
    assert!(err.to_string().contains("SLURM_BITSTR_LEN=0"), "{err}");
    let err = parse_squeue("1|RUNNING|None\n\n2|WEIRD|None\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "squeue: line 3: unknown slurm job state \"WEIRD\": \"2|WEIRD|None\""
    );
    for bad in [
        "1|RUNNING",
        "just text",
        "1 RUNNING None",
        "x|RUNNING|None",
        "1|R|None",
        "7_[3-1]|PENDING|None",
    ] {
        assert!(
            matches!(parse_squeue(bad), Err(ParseError::Line { line: 1, .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn array_task_expressions() {
    assert_eq!(expand_array_tasks("0-7%2"), Ok((0..8).collect()));
    assert_eq!(expand_array_tasks("3-5,9%1"), Ok(vec![3, 4, 5, 9]));
    assert_eq!(expand_array_tasks("0,4,8,12"), Ok(vec![0, 4, 8, 12]));
    assert_eq!(expand_array_tasks("1-10:3"), Ok(vec![1, 4, 7, 10]));
    assert_eq!(expand_array_tasks("7"), Ok(vec![7]));
    for bad in [
        "",
        "5-3",
        "1-4:0",
        "a",
        "1-",
        "1,,2",
        "1%",
        "1%x",
        "0-4294967295",
        "0,3,6...%1",
    ] {
        assert!(
            matches!(
                expand_array_tasks(bad),
                Err(ParseError::InvalidArrayTasks { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn scontrol_array_records() {
    let jobs = parse_scontrol_show_job(SCONTROL_ARRAY).unwrap();
    // the folded record "ArrayTaskId=6-7%2" yields 11_6 and 11_7
    let refs: Vec<JobRef> = jobs.iter().map(|j| j.job).collect();
    assert_eq!(
        refs,
        [6, 7, 5, 4, 3, 2, 1, 0].map(|i| elem(11, i)),
        "{refs:?}"
    );
    assert_eq!(
        jobs[0],
        ScontrolJob {
            job: elem(11, 6),
            job_id: 11,
            state: SlurmState::Pending,
            reason: Some("JobArrayTaskLimit".into()),
            exit_code: Some((0, 0)),
            array_job_id: Some(11),
            array_task_id: Some(6),
            job_name: Some("pp-arr".into()),
            dependency: None,
        }
    );
    assert_eq!(jobs[1].job, elem(11, 7));
    assert_eq!(jobs[2].job_id, 22);
    assert_eq!(jobs[2].state, SlurmState::Running);
    assert_eq!(jobs[2].reason, None);
    assert_eq!(jobs[7].job_id, 17);
    assert_eq!(jobs[7].state, SlurmState::Completed);
}

#[test]
fn scontrol_finished_jobs() {
    let jobs = parse_scontrol_show_job(SCONTROL_TIMEOUT).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job, job(14));
    assert_eq!(jobs[0].state, SlurmState::Timeout);
    assert_eq!(jobs[0].reason.as_deref(), Some("TimeLimit"));
    assert_eq!(jobs[0].exit_code, Some((0, 15)));
    assert_eq!(jobs[0].array_job_id, None);
    assert_eq!(jobs[0].array_task_id, None);

    let jobs = parse_scontrol_show_job(SCONTROL_CANCELLED).unwrap();
    assert_eq!(jobs[0].job, job(13));
    assert_eq!(jobs[0].state, SlurmState::Running);
    assert_eq!(jobs[0].job_name.as_deref(), Some("pp-cancel"));
    // recorded after the scancel (only these fields differed)
    let after = SCONTROL_CANCELLED
        .replace("JobState=RUNNING", "JobState=CANCELLED")
        .replace("ExitCode=0:0", "ExitCode=0:15");
    let jobs = parse_scontrol_show_job(&after).unwrap();
    assert_eq!(jobs[0].state, SlurmState::Cancelled);
    assert_eq!(jobs[0].exit_code, Some((0, 15)));

    let failed = "JobId=12 JobName=pp-fail UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901750 Nice=0 Account=(null) QOS=(null) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 RunTime=00:00:01 TimeLimit=365-00:00:00 TimeMin=N/A";
    let jobs = parse_scontrol_show_job(failed).unwrap();
    assert_eq!(jobs[0].state, SlurmState::Failed);
    assert_eq!(jobs[0].exit_code, Some((3, 0)));
    assert_eq!(jobs[0].reason.as_deref(), Some("NonZeroExitCode"));
}

#[test]
fn scontrol_values_with_spaces_and_equals() {
    let jobs = parse_scontrol_show_job(SCONTROL_TRICKY).unwrap();
    assert_eq!(jobs.len(), 1);
    let j = &jobs[0];
    assert_eq!(j.job, job(24));
    assert_eq!(j.job_name.as_deref(), Some("my job=x y"));
    assert_eq!(j.state, SlurmState::Pending);
    // the comment's "Reason=fake" does not replace the real reason
    assert_eq!(j.reason.as_deref(), Some("JobHeldUser"));
    let pairs = scontrol_pairs(SCONTROL_TRICKY.trim());
    let get = |k: &str| pairs.iter().find(|(key, _)| *key == k).map(|&(_, v)| v);
    assert_eq!(get("Comment"), Some("a=b c Reason=fake"));
    assert_eq!(
        get("Command"),
        Some("/tmp/pitch-slurm-parse/rec/s.sh arg1 two words")
    );
    assert_eq!(get("UserId"), Some("root(0)"));
    assert_eq!(get("TRES"), Some("cpu=1,mem=5423M,node=1,billing=1"));
    assert_eq!(get("ReqB:S:C:T"), Some("0:0:*:*"));
    assert_eq!(get("Power"), Some(""));

    let spaced = "JobId=5 JobName=x JobState=PENDING Reason=ReqNodeNotAvail, UnavailableNodes:n1 Dependency=(null) ExitCode=0:0";
    let jobs = parse_scontrol_show_job(spaced).unwrap();
    assert_eq!(
        jobs[0].reason.as_deref(),
        Some("ReqNodeNotAvail, UnavailableNodes:n1")
    );
}

#[test]
fn scontrol_multiline_form() {
    let jobs = parse_scontrol_show_job(SCONTROL_MULTILINE).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job, job(15));
    assert_eq!(jobs[0].state, SlurmState::Pending);
    assert_eq!(jobs[0].reason.as_deref(), Some("DependencyNeverSatisfied"));
    assert_eq!(jobs[0].dependency.as_deref(), Some("afterok:12(failed)"));
    assert_eq!(jobs[0].job_name.as_deref(), Some("pp-dep"));
    // several records in a row
    let both = format!("{SCONTROL_MULTILINE}{SCONTROL_TIMEOUT}");
    let jobs = parse_scontrol_show_job(&both).unwrap();
    assert_eq!(
        jobs.iter().map(|j| j.job).collect::<Vec<_>>(),
        [job(15), job(14)]
    );
}

#[test]
fn scontrol_unknown_and_empty() {
    // `scontrol show job -o 99999`: exit 1, this on stderr, nothing on stdout
    let stderr = "slurm_load_jobs error: Invalid job id specified\n";
    assert!(scontrol_job_unknown(stderr));
    assert!(!scontrol_job_unknown(
        "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
    ));
    assert_eq!(parse_scontrol_show_job(stderr), Ok(vec![]));
    assert_eq!(parse_scontrol_show_job(""), Ok(vec![]));
    // `scontrol show job -o` on an empty cluster (exit 0)
    assert_eq!(
        parse_scontrol_show_job("No jobs in the system\n"),
        Ok(vec![])
    );
}

#[test]
fn scontrol_errors() {
    let err =
        parse_scontrol_show_job("JobId=1 JobName=a JobState=WEIRD Reason=None\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "scontrol show job: line 1: unknown slurm job state \"WEIRD\": \"JobState=WEIRD\""
    );
    let err = parse_scontrol_show_job("JobId=1 JobName=a Reason=None\n").unwrap_err();
    assert!(
        matches!(err, ParseError::Line { line: 1, ref reason, .. } if reason == "no JobState"),
        "{err}"
    );
    let err = parse_scontrol_show_job("\nJobId=x JobState=RUNNING\n").unwrap_err();
    assert!(
        matches!(err, ParseError::Line { line: 2, ref text, .. } if text == "JobId=x"),
        "{err}"
    );
    let err = parse_scontrol_show_job("JobId=1 JobState=RUNNING ExitCode=0\n").unwrap_err();
    assert!(
        err.to_string().contains("invalid slurm exit code \"0\""),
        "{err}"
    );
    let err = parse_scontrol_show_job("JobId=1 ArrayJobId=1 JobState=RUNNING\n").unwrap_err();
    assert!(err.to_string().contains("without ArrayTaskId"), "{err}");
    // scontrol cuts folded task ids at 64 bytes unless SLURM_BITSTR_LEN=0 (recorded)
    let cut = "JobId=33 ArrayJobId=33 ArrayTaskId=0,3,6,9,12,15,18,21,24,27,30,33,36,39,42,45,48,51,54,57,60,6...%1 ArrayTaskThrottle=1 JobName=pp-big2 UserId=root(0) JobState=PENDING Reason=JobHeldUser";
    let err = parse_scontrol_show_job(cut).unwrap_err();
    assert!(err.to_string().contains("SLURM_BITSTR_LEN=0"), "{err}");
    let err = parse_scontrol_show_job("garbage\n").unwrap_err();
    assert!(matches!(err, ParseError::Line { line: 1, .. }), "{err}");
}

#[test]
fn sacct_entries() {
    let e = parse_sacct(SACCT_FINAL).unwrap();
    assert_eq!(e.len(), 13);
    let find = |j: JobRef| e.iter().find(|x| x.job == j).cloned().unwrap();
    assert_eq!(
        find(job(1)),
        SacctEntry {
            job: job(1),
            state: SlurmState::Completed,
            exit_code: (0, 0)
        }
    );
    assert_eq!(
        (find(job(3)).state, find(job(3)).exit_code),
        (SlurmState::Failed, (3, 0))
    );
    assert_eq!(find(job(4)).state, SlurmState::Cancelled);
    assert_eq!(find(job(5)).state, SlurmState::Timeout);
    assert_eq!(find(job(6)).state, SlurmState::Pending);
    assert_eq!(
        (find(job(7)).state, find(job(7)).exit_code),
        (SlurmState::Failed, (0, 9))
    );
    assert_eq!(find(elem(2, 5)).state, SlurmState::Completed);

    // folded pending elements "2_[2-5%2]" are expanded
    let e = parse_sacct(SACCT_EARLY).unwrap();
    let pending: Vec<JobRef> = e
        .iter()
        .filter(|x| x.state == SlurmState::Pending)
        .map(|x| x.job)
        .collect();
    assert_eq!(
        pending,
        [job(6), elem(2, 2), elem(2, 3), elem(2, 4), elem(2, 5)]
    );
    assert_eq!(
        e.iter().find(|x| x.job == job(5)).unwrap().state,
        SlurmState::Running
    );
}

#[test]
fn sacct_skips_steps() {
    let e = parse_sacct(SACCT_STEPS).unwrap();
    let jobs: Vec<JobRef> = e.iter().map(|x| x.job).collect();
    assert_eq!(
        jobs,
        [
            job(1),
            job(3),
            job(4),
            elem(2, 0),
            elem(2, 1),
            elem(2, 2),
            elem(2, 3),
            elem(2, 4),
            elem(2, 5)
        ]
    );
    // the allocation's state, not the step's (4.batch is "CANCELLED|0:15")
    assert_eq!(e[2].exit_code, (0, 0));
    assert_eq!(
        parse_sacct(
            "5|TIMEOUT|0:0\n5.batch|CANCELLED|0:15\n5.extern|COMPLETED|0:0\n5.0|FAILED|1:0\n"
        )
        .unwrap()
        .len(),
        1
    );
    // -p (trailing '|') and blank lines
    assert_eq!(
        parse_sacct("\n8|COMPLETED|0:0|\n\n").unwrap()[0].job,
        job(8)
    );
    // an unknown job id prints nothing (exit 0)
    assert_eq!(parse_sacct(""), Ok(vec![]));
}

#[test]
fn sacct_errors() {
    let err = parse_sacct("1|COMPLETED|0:0\n2|COMPLETED+|0:0\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "sacct: line 2: unknown slurm job state \"COMPLETED+\": \"2|COMPLETED+|0:0\""
    );
    for bad in [
        "1|COMPLETED",
        "1|COMPLETED|0",
        "1|COMPLETED|a:b",
        "1|COMPLETED|0:0|x",
        "1+0|COMPLETED|0:0",
        "x|COMPLETED|0:0",
    ] {
        assert!(
            matches!(parse_sacct(bad), Err(ParseError::Line { line: 1, .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn sacct_disabled_message() {
    // `sacct -X -n -P -o JobID,State,ExitCode -j 12` without slurmdbd: exit 1, on stderr
    assert!(sacct_disabled("Slurm accounting storage is disabled\n"));
    assert!(!sacct_disabled(""));
    assert!(!sacct_disabled("1|COMPLETED|0:0\n"));
}

#[test]
fn exit_codes() {
    assert_eq!(parse_exit_code("0:0"), Ok((0, 0)));
    assert_eq!(parse_exit_code("3:0"), Ok((3, 0)));
    assert_eq!(parse_exit_code("0:15"), Ok((0, 15)));
    assert_eq!(parse_exit_code("-1:0"), Ok((-1, 0)));
    for bad in [
        "",
        "0",
        ":",
        "0:",
        "a:0",
        "0:0:0",
        "+1:0",
        " 0:0",
        "99999999999:0",
    ] {
        assert_eq!(
            parse_exit_code(bad),
            Err(ParseError::InvalidExitCode(bad.into())),
            "{bad:?}"
        );
    }
}

#[test]
fn scontrol_config() {
    let cfg = parse_scontrol_config(SCONTROL_CONFIG);
    assert_eq!(max_array_size(&cfg), Ok(10001));
    assert_eq!(cfg.get("ClusterName").map(String::as_str), Some("pitch"));
    assert_eq!(
        cfg.get("SchedulerParameters").map(String::as_str),
        Some("batch_sched_delay=0,sched_min_interval=0,sched_interval=1,bf_interval=1,default_queue_depth=1000")
    );
    assert_eq!(cfg.get("PMIxTimeout").map(String::as_str), Some("300"));
    assert!(!cfg.keys().any(|k| k.contains(' ')));

    let acct = parse_scontrol_config("AccountingStorageType   = accounting_storage/slurmdbd\n");
    assert_eq!(
        max_array_size(&acct),
        Err(ParseError::MissingConfigKey("MaxArraySize"))
    );
    assert_eq!(
        max_array_size(&HashMap::new()).unwrap_err().to_string(),
        "scontrol show config: no MaxArraySize line"
    );
    let odd = parse_scontrol_config("MinJobAge = 5 min\nMaxArraySize = lots\n");
    assert_eq!(
        max_array_size(&odd).unwrap_err().to_string(),
        "scontrol show config: invalid MaxArraySize value \"lots\""
    );
    assert!(matches!(
        max_array_size(&odd),
        Err(ParseError::InvalidConfigValue {
            key: "MaxArraySize",
            ..
        })
    ));
    assert_eq!(
        max_array_size(&parse_scontrol_config("MaxArraySize=2")),
        Ok(2)
    );
}

#[test]
fn squeue_scripts_give_each_submissions_job_id() {
    // `squeue -h -t all -o '%F|%o'` (recorded on the local cluster: array 7 of 41 with its
    // pending rest folded into one line first and its running elements after, each with the
    // array's id in %F (their own ids, 8 and 9, are what %A prints); a single job 24).
    let out = "7|/tmp/c/jobs/pitch-1-5.sh\n7|/tmp/c/jobs/pitch-1-5.sh\n\n\
               7|/tmp/c/jobs/pitch-1-5.sh\n24|/tmp/c/jobs/pitch-1-6.sh\n25|/tmp/a|b.sh\n";
    let found = parse_squeue_scripts(out).unwrap();
    assert_eq!(found.len(), 3);
    assert_eq!(found["/tmp/c/jobs/pitch-1-5.sh"], 7);
    assert_eq!(found["/tmp/c/jobs/pitch-1-6.sh"], 24);
    assert_eq!(found["/tmp/a|b.sh"], 25);
    let err = parse_squeue_scripts("103_2|/x.sh").unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn pending_reasons_that_never_clear_make_a_job_stuck() {
    // `squeue -h -r -t all -o '%i|%T|%r'` (recorded: cores = 1000 on a 16-CPU cluster, a
    // dependent of a failed job, a job waiting for a node that is down).
    let out = "41|PENDING|PartitionConfig\n42|PENDING|DependencyNeverSatisfied\n\
               43|PENDING|ReqNodeNotAvail, UnavailableNodes:n[1-2]\n44|PENDING|Resources\n\
               45|PENDING|ReqNodeNotAvail, UnavailableNodes:\n46|RUNNING|None\n";
    let states = states_by_job(&parse_squeue(out).unwrap());
    let stuck = |id| matches!(states[&JobRef::single(id)], JobState::Stuck(_));
    assert!(stuck(41) && stuck(42) && stuck(45));
    assert!(!stuck(43) && !stuck(44) && !stuck(46));
    assert_eq!(states[&JobRef::single(41)].name(), "PENDING");
    assert!(!states[&JobRef::single(41)].is_finished());
}

#[test]
fn partition_limits_refuse_what_no_job_can_get() {
    // `scontrol show partition -o` (recorded, cut to the fields read; `short` made up).
    let out = "PartitionName=debug AllowGroups=ALL Default=YES MaxNodes=UNLIMITED \
               MaxTime=UNLIMITED MaxCPUsPerNode=UNLIMITED Nodes=n[1-4] TotalCPUs=16 \
               TotalNodes=4\n\
               PartitionName=short Default=NO MaxNodes=2 MaxTime=30 MaxCPUsPerNode=2 \
               TotalCPUs=16 TotalNodes=4\n";
    let parts = parse_partitions(out);
    assert_eq!(parts.len(), 2);
    let (debug, short) = (&parts[0], &parts[1]);
    assert!(debug.default && !short.default);
    assert_eq!(short.max_time, Some(std::time::Duration::from_secs(1800)));
    assert_eq!(debug.refuses(16, 1, None, None), None);
    let why = debug.refuses(1000, 1, None, None).unwrap();
    assert!(why.contains("1000 CPUs") && why.contains("16"), "{why}");
    assert!(debug
        .refuses(1, 1, Some(50), None)
        .unwrap()
        .contains("num_nodes = 50"));
    assert!(short
        .refuses(3, 2, None, None)
        .unwrap()
        .contains("at most 4"));
    let hour = std::time::Duration::from_secs(3600);
    assert!(short
        .refuses(1, 1, None, Some(hour))
        .unwrap()
        .contains("MaxTime"));
    assert_eq!(debug.refuses(1, 1, Some(4), Some(hour)), None);
}

/// The seeds of the `slurm_output` fuzz target (see `write_fuzz_seeds` in
/// `backend::decode_fuzz_tests`): the outputs recorded above.
#[test]
#[ignore = "writes the fuzz targets' seeds into fuzz/corpus"]
fn write_slurm_fuzz_seeds() {
    use crate::backend::decode_fuzz_tests::write_seed;
    let seeds = [
        ("squeue", SQUEUE_R_RUNNING),
        ("squeue-stepped", SQUEUE_STEPPED),
        ("scontrol-array", SCONTROL_ARRAY),
        ("scontrol-multiline", SCONTROL_MULTILINE),
        ("sacct-steps", SACCT_STEPS),
        ("sacct-early", SACCT_EARLY),
        ("sbatch", "1234;cluster\n"),
        (
            "partitions",
            "PartitionName=debug AllowGroups=ALL Default=YES MaxNodes=UNLIMITED MaxTime=UNLIMITED \
             TotalCPUs=8 TotalNodes=4 MaxCPUsPerNode=UNLIMITED\n\
             PartitionName=short Default=NO MaxNodes=2 MaxTime=30 MaxCPUsPerNode=2 TotalCPUs=4 \
             TotalNodes=2\n",
        ),
        (
            "squeue-scripts",
            "103|/tmp/c/jobs/pitch-1-5.sh\n104|/tmp/c/jobs/pitch-1-6.sh\n",
        ),
    ];
    for (name, text) in seeds {
        write_seed("slurm_output", name, text.as_bytes());
    }
    let config: String = SCONTROL_CONFIG
        .lines()
        .take(12)
        .collect::<Vec<_>>()
        .join("\n");
    write_seed(
        "slurm_output",
        "scontrol-config",
        format!("{config}\nMaxArraySize = 1001\n").as_bytes(),
    );
}
