//! The task registry, built at link time: the [`task!`](crate::task!) macro registers each
//! function under its name with a fingerprint of its signature, and the worker finds it there.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::codec;
use crate::error::{Error, LaunchErrorKind, TaskError};

/// The erased body of a task: encoded arguments in, encoded value (or error) out.
#[doc(hidden)]
pub type RunFn = fn(Vec<Vec<u8>>) -> Result<Vec<u8>, TaskError>;

/// One registered task function. Created by [`task!`](crate::task!); not for direct use.
#[doc(hidden)]
pub struct Registration {
    /// The task's name (`module::path::function` unless renamed).
    pub name: &'static str,
    /// The task's fingerprint (name, argument and output types, version).
    pub fingerprint: fn() -> &'static str,
    /// Decodes the arguments, runs the function, encodes its value.
    pub run: RunFn,
}

inventory::collect!(Registration);

/// The fingerprint of a task signature: a hash of its name, argument type names, output type
/// name and the user's version number.
pub fn fingerprint(name: &str, args: &[&str], output: &str, version: u32) -> String {
    let material = format!("{name}\0{}\0{output}\0{version}", args.join("\0"));
    blake3::hash(material.as_bytes()).to_hex()[..16].to_string()
}

fn table() -> &'static Result<BTreeMap<&'static str, &'static Registration>, String> {
    static TABLE: OnceLock<Result<BTreeMap<&'static str, &'static Registration>, String>> =
        OnceLock::new();
    TABLE.get_or_init(|| {
        let mut map = BTreeMap::new();
        for reg in inventory::iter::<Registration> {
            if map.insert(reg.name, reg).is_some() {
                return Err(reg.name.to_string());
            }
        }
        Ok(map)
    })
}

/// Fails when two tasks share a name.
pub(crate) fn check() -> Result<(), Error> {
    match table() {
        Ok(_) => Ok(()),
        Err(name) => Err(Error::DuplicateTask(name.clone())),
    }
}

/// Finds a task by name.
pub(crate) fn lookup(name: &str) -> Result<&'static Registration, TaskError> {
    match table() {
        Ok(map) => map
            .get(name)
            .copied()
            .ok_or_else(|| TaskError::UnknownTask {
                name: name.to_string(),
            }),
        Err(dup) => Err(TaskError::Launch {
            what: "the worker".into(),
            kind: LaunchErrorKind::Other,
            detail: format!("two tasks are registered under the name {dup:?}"),
        }),
    }
}

/// The names of every registered task, sorted.
pub fn registered_tasks() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = inventory::iter::<Registration>
        .into_iter()
        .map(|r| r.name)
        .collect();
    names.sort_unstable();
    names
}

/// Support code for the [`task!`](crate::task!) macro's expansion.
#[doc(hidden)]
pub mod support {
    pub use inventory;

    use super::*;

    /// Decodes one argument.
    pub fn decode_arg<T: serde::de::DeserializeOwned>(
        bytes: Option<Vec<u8>>,
        name: &str,
    ) -> Result<T, TaskError> {
        let bytes = bytes.ok_or_else(|| TaskError::Decode {
            what: format!("argument {name}"),
            detail: "the task file has fewer arguments than the function".into(),
        })?;
        codec::decode(&bytes).map_err(|detail| TaskError::Decode {
            what: format!("argument {name} as {}", std::any::type_name::<T>()),
            detail,
        })
    }

    /// Encodes a returned value.
    pub fn encode_value<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, TaskError> {
        codec::encode(value).map_err(|detail| TaskError::Encode {
            what: format!("the returned {}", std::any::type_name::<T>()),
            detail,
        })
    }

    /// Encodes the `Ok` of a returned `Result`, or turns its `Err` into an error chain.
    pub fn encode_result<T: serde::Serialize, E>(value: Result<T, E>) -> Result<Vec<u8>, TaskError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        match value {
            Ok(v) => encode_value(&v),
            Err(e) => {
                let boxed: Box<dyn std::error::Error + Send + Sync + 'static> = e.into();
                Err(TaskError::from_error(boxed.as_ref()))
            }
        }
    }
}

/// Defines task functions: each stays an ordinary function, callable locally, and gains
/// `submit`, `submit_ranks` and `map` that run it through an [`Executor`](crate::Executor).
///
/// ```no_run
/// pitch::task! {
///     /// Documentation and attributes pass through.
///     pub fn add(a: i64, b: i64) -> i64 { a + b }
/// }
/// pitch::task! {
///     version = 2;   // bump to invalidate cached results of an older implementation
///     pub fn parse(text: String) -> Result<u32, std::num::ParseIntError> { text.trim().parse() }
/// }
/// fn main() -> Result<(), pitch::Error> {
///     pitch::init();
///     let exe = pitch::SingleNodeExecutor::builder().max_workers(2).build()?;
///     let a = add::submit(&exe, 1, 2);
///     let b = add::submit(&exe, &a, 10);          // a future as an argument: a dependency
///     let many = add::map(&exe, (0..10).map(|i| (i, i)));
///     assert_eq!(b.result()?, 13);
///     assert_eq!(pitch::wait_all(many)?.len(), 10);
///     assert_eq!(parse::submit(&exe, "42".to_string()).result()?, 42);
///     Ok(())
/// }
/// ```
///
/// A function returning `Result<T, E>` (spelled `Result<..>`; `E` converts into
/// `Box<dyn Error + Send + Sync>`, as `anyhow::Error` does) resolves to `T`, and its error's
/// chain travels back as [`TaskError::Failed`]. Parameters are `name: Type`; arguments and
/// results must implement serde's `Serialize` and `Deserialize`. The task's name is
/// `module_path::function`; an optional `version = N;` line feeds the fingerprint.
#[macro_export]
macro_rules! task {
    () => {};
    (version = $ver:literal; $($rest:tt)+) => { $crate::__task_item! { @ver $ver; $($rest)+ } };
    ($($rest:tt)+) => { $crate::__task_item! { @ver 0; $($rest)+ } };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __task_item {
    (@ver $ver:literal; $(#[$m:meta])* $vis:vis fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> Result<$ok:ty, $err:ty> $body:block $($rest:tt)*) => {
        $(#[$m])* $vis fn $name($($arg: $ty),*) -> Result<$ok, $err> $body
        $crate::__task_glue! { $ver; $vis $name ($($arg: $ty),*) -> $ok; encode_result }
        $crate::task! { $($rest)* }
    };
    (@ver $ver:literal; $(#[$m:meta])* $vis:vis fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty $body:block $($rest:tt)*) => {
        $(#[$m])* $vis fn $name($($arg: $ty),*) -> $ret $body
        $crate::__task_glue! { $ver; $vis $name ($($arg: $ty),*) -> $ret; encode_plain }
        $crate::task! { $($rest)* }
    };
    (@ver $ver:literal; $(#[$m:meta])* $vis:vis fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) $body:block $($rest:tt)*) => {
        $(#[$m])* $vis fn $name($($arg: $ty),*) $body
        $crate::__task_glue! { $ver; $vis $name ($($arg: $ty),*) -> (); encode_plain }
        $crate::task! { $($rest)* }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __one_or_tuple {
    ($single:ty) => { $single };
    ($($t:ty),*) => { ($($t,)*) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __one_or_tuple_pat {
    ($single:ident) => { $single };
    ($($a:ident),*) => { ($($a,)*) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __task_encode {
    (encode_plain, $v:expr) => {
        $crate::__private::encode_value(&$v)
    };
    (encode_result, $v:expr) => {
        $crate::__private::encode_result($v)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __task_glue {
    ($ver:literal; $vis:vis $name:ident ($($arg:ident : $ty:ty),*) -> $out:ty; $enc:ident) => {
        #[doc = concat!("Submission handles of the task `", stringify!($name), "`.")]
        #[allow(non_camel_case_types, dead_code)]
        $vis struct $name {}

        #[allow(dead_code, clippy::too_many_arguments, clippy::unused_unit)]
        impl $name {
            /// The task's registered name.
            pub const NAME: &'static str = concat!(module_path!(), "::", stringify!($name));

            /// The task's fingerprint: name, argument and output types, version.
            pub fn fingerprint() -> &'static str {
                static FP: ::std::sync::OnceLock<::std::string::String> = ::std::sync::OnceLock::new();
                FP.get_or_init(|| {
                    $crate::__private::fingerprint(
                        Self::NAME,
                        &[$(::std::any::type_name::<$ty>()),*],
                        ::std::any::type_name::<$out>(),
                        $ver,
                    )
                })
            }

            /// Submits one call; the future yields rank 0's value.
            pub fn submit(exe: &$crate::Executor, $($arg: impl ::core::convert::Into<$crate::Arg<$ty>>),*) -> $crate::TaskFuture<$out> {
                exe.__submit_function(Self::NAME, Self::fingerprint(), vec![$($crate::__private::arg_source($arg.into())),*], false)
            }

            /// Submits one call; the future yields every rank's value in rank order.
            pub fn submit_ranks(exe: &$crate::Executor, $($arg: impl ::core::convert::Into<$crate::Arg<$ty>>),*) -> $crate::TaskFuture<::std::vec::Vec<$out>> {
                exe.__submit_function(Self::NAME, Self::fingerprint(), vec![$($crate::__private::arg_source($arg.into())),*], true)
            }

            /// Submits one call per item (a tuple of the arguments, or the argument itself for
            /// one-argument functions); the futures keep the input order.
            pub fn map(exe: &$crate::Executor, items: impl ::core::iter::IntoIterator<Item = $crate::__one_or_tuple!($($ty),*)>) -> ::std::vec::Vec<$crate::TaskFuture<$out>> {
                let _burst = exe.__burst();
                items.into_iter().map(|$crate::__one_or_tuple_pat!($($arg),*)| Self::submit(exe, $($arg),*)).collect()
            }

            /// This task as the init function of `block_allocation` workers, called with
            /// these arguments once in each worker; tasks read its value with
            /// `pitch::worker_state`.
            pub fn init($($arg: $ty),*) -> $crate::InitFunction {
                $crate::__private::init_function(
                    Self::NAME,
                    Self::fingerprint(),
                    ::std::any::type_name::<$out>(),
                    vec![$($crate::__private::encode_value(&$arg)),*],
                )
            }

            #[doc(hidden)]
            pub fn __run(args: ::std::vec::Vec<::std::vec::Vec<u8>>) -> ::std::result::Result<::std::vec::Vec<u8>, $crate::TaskError> {
                let mut __args = args.into_iter();
                $( let $arg: $ty = $crate::__private::decode_arg(__args.next(), stringify!($arg))?; )*
                let __value = $name($($arg),*);
                $crate::__task_encode!($enc, __value)
            }
        }

        $crate::__private::inventory::submit! {
            $crate::__private::Registration { name: $name::NAME, fingerprint: $name::fingerprint, run: $name::__run }
        }
    };
}
