//! Where the network runs ([`Backend`]): tract, in pure Rust, or ONNX Runtime through the
//! `ort` crate, whose shared library is loaded at start from a path (`load-dynamic`: nothing
//! is downloaded at build or run time; `scripts/fetch-onnxruntime` unpacks it from the PyPI
//! wheel). Both run the same ONNX file on the same letterboxed input and hand back the YOLO
//! heads' raw outputs; decoding and NMS are shared (`postprocess.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tract_onnx::prelude::*;

use crate::{DetectError, Result};

/// Which runtime runs the network (`FAVE_DETECT_BACKEND`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// tract: pure Rust, no library to install.
    Tract,
    /// ONNX Runtime, from the shared library at `library`.
    OnnxRuntime { library: PathBuf },
}

impl Backend {
    /// `FAVE_DETECT_BACKEND`: `onnxruntime` (the default), `tract`, or `auto` (ONNX Runtime
    /// when its library is there, else tract). The library is `ORT_DYLIB_PATH`, else
    /// `$FAVE_TOOLS/onnxruntime/libonnxruntime.so.1.31.1`.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let library = ort_library(lookup);
        match lookup("FAVE_DETECT_BACKEND").as_deref().map(str::trim) {
            None | Some("" | "onnxruntime" | "ort") => Ok(Self::OnnxRuntime { library }),
            Some("tract") => Ok(Self::Tract),
            Some("auto") if library.is_file() => Ok(Self::OnnxRuntime { library }),
            Some("auto") => Ok(Self::Tract),
            Some(other) => Err(format!(
                "FAVE_DETECT_BACKEND={other:?}: expected onnxruntime, tract or auto"
            )),
        }
    }

    /// Its name, as logs and benchmarks print it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Tract => "tract",
            Self::OnnxRuntime { .. } => "onnxruntime",
        }
    }
}

/// Where ONNX Runtime's shared library is looked for.
pub fn ort_library(lookup: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(path) = lookup("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let tools = lookup("FAVE_TOOLS")
        .map(PathBuf::from)
        .or_else(|| lookup("HOME").map(|h| Path::new(&h).join(".cache/fave-tools")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache/fave-tools"));
    tools.join("onnxruntime").join(ORT_LIBRARY)
}

/// The library `scripts/fetch-onnxruntime` unpacks.
pub const ORT_LIBRARY: &str = "libonnxruntime.so.1.31.1";

/// A loaded network.
pub(crate) enum Engine {
    Tract(Arc<TypedRunnableModel>),
    /// One session per core, each on one thread, as tract runs one frame per core: a
    /// session runs one frame at a time (`Session::run` takes `&mut`).
    Ort {
        sessions: Vec<Mutex<ort::session::Session>>,
        next: AtomicUsize,
        outputs: Vec<String>,
    },
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tract(_) => f.write_str("Engine::Tract"),
            Self::Ort { sessions, .. } => write!(f, "Engine::Ort({} sessions)", sessions.len()),
        }
    }
}

fn tract_err(e: TractError) -> DetectError {
    DetectError::Runtime(e.into())
}

fn ort_err(e: ort::Error) -> DetectError {
    DetectError::Runtime(e.to_string().into())
}

/// ONNX Runtime's one environment in this process, made from the first library asked for.
fn ort_environment(library: &Path) -> Result<&'static ort::environment::Environment> {
    static ENVIRONMENT: OnceLock<std::result::Result<ort::environment::Environment, String>> =
        OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| {
            // ort names the path and the version it found when the library will not do.
            ort::init_from(library)
                .map_err(|e| format!("ONNX Runtime: {e}"))?
                .with_name("stage-detect")
                .build()
                .map_err(|e| format!("ONNX Runtime at {}: {e}", library.display()))
        })
        .as_ref()
        .map_err(|e| DetectError::Runtime(e.clone().into()))
}

impl Engine {
    /// Loads `model` for a 1×3×`height`×`width` input.
    pub(crate) fn load(
        backend: &Backend,
        model: &Path,
        height: usize,
        width: usize,
    ) -> Result<Self> {
        match backend {
            Backend::Tract => {
                let input_fact = f32::fact([1, 3, height, width]);
                let plan = tract_onnx::onnx()
                    .model_for_path(model)
                    .and_then(|m| m.with_input_fact(0, input_fact.into()))
                    .and_then(|m| m.into_optimized())
                    .and_then(|m| m.into_runnable())
                    .map_err(tract_err)?;
                Ok(Self::Tract(plan))
            }
            Backend::OnnxRuntime { library } => {
                let environment = ort_environment(library)?;
                let cores = std::thread::available_parallelism().map_or(1, usize::from);
                let mut sessions = Vec::with_capacity(cores);
                for _ in 0..cores {
                    let mut builder = ort::session::Session::builder(environment)
                        .map_err(ort_err)?
                        .with_intra_threads(1)
                        .map_err(|e| ort_err(e.into()))?
                        .with_inter_threads(1)
                        .map_err(|e| ort_err(e.into()))?;
                    let session = builder.commit_from_file(model).map_err(ort_err)?;
                    sessions.push(Mutex::new(session));
                }
                let outputs = sessions[0]
                    .lock()
                    .expect("not poisoned")
                    .outputs()
                    .iter()
                    .map(|o| o.name().to_owned())
                    .collect();
                Ok(Self::Ort {
                    sessions,
                    next: AtomicUsize::new(0),
                    outputs,
                })
            }
        }
    }

    /// How many outputs the network has.
    pub(crate) fn outputs(&self) -> usize {
        match self {
            Self::Tract(plan) => plan.model().outputs.len(),
            Self::Ort { outputs, .. } => outputs.len(),
        }
    }

    /// Runs the network on one 1×3×`height`×`width` input; each output's shape and values.
    pub(crate) fn run(
        &self,
        input: Vec<f32>,
        height: usize,
        width: usize,
    ) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
        match self {
            Self::Tract(plan) => {
                let input =
                    Tensor::from_shape(&[1, 3, height, width], &input).map_err(tract_err)?;
                let outputs = plan.run(tvec!(input.into())).map_err(tract_err)?;
                outputs
                    .iter()
                    .map(|out| {
                        let view = out.try_as_plain_ram().map_err(tract_err)?;
                        let data = view.as_slice::<f32>().map_err(tract_err)?;
                        Ok((out.shape().to_vec(), data.to_vec()))
                    })
                    .collect()
            }
            Self::Ort {
                sessions,
                next,
                outputs,
            } => {
                // A free session if there is one, else the next in turn.
                let mut session = match sessions.iter().find_map(|s| s.try_lock().ok()) {
                    Some(free) => free,
                    None => sessions[next.fetch_add(1, Ordering::Relaxed) % sessions.len()]
                        .lock()
                        .expect("not poisoned"),
                };
                let shape = vec![1_i64, 3, height as i64, width as i64];
                let input = ort::value::Tensor::from_array((shape, input)).map_err(ort_err)?;
                let results = session.run(ort::inputs![input]).map_err(ort_err)?;
                outputs
                    .iter()
                    .map(|name| {
                        let (shape, data) = results[name.as_str()]
                            .try_extract_tensor::<f32>()
                            .map_err(ort_err)?;
                        let shape = shape.iter().map(|&d| d.max(0) as usize).collect();
                        Ok((shape, data.to_vec()))
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn onnxruntime_is_the_default_and_each_setting_is_read() {
        let tools = [("FAVE_TOOLS", "/opt/tools")];
        let library = PathBuf::from("/opt/tools/onnxruntime").join(ORT_LIBRARY);
        assert_eq!(
            Backend::from_lookup(&lookup(&tools)),
            Ok(Backend::OnnxRuntime {
                library: library.clone()
            })
        );
        let named = [
            ("ORT_DYLIB_PATH", "/lib/ort.so"),
            ("FAVE_TOOLS", "/opt/tools"),
        ];
        assert_eq!(
            Backend::from_lookup(&lookup(&named)),
            Ok(Backend::OnnxRuntime {
                library: "/lib/ort.so".into()
            })
        );
        let tract = [("FAVE_DETECT_BACKEND", "tract")];
        assert_eq!(Backend::from_lookup(&lookup(&tract)), Ok(Backend::Tract));
        // `auto` falls back to tract when the library is not there.
        let auto = [
            ("FAVE_DETECT_BACKEND", "auto"),
            ("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so"),
        ];
        assert_eq!(Backend::from_lookup(&lookup(&auto)), Ok(Backend::Tract));
        let bad = [("FAVE_DETECT_BACKEND", "cuda")];
        assert!(Backend::from_lookup(&lookup(&bad)).is_err());
    }
}
