//! Sentence embeddings: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT from
//! sentence-transformers), run on the CPU with candle, its text split by the `tokenizers`
//! crate from the model's own `tokenizer.json`. An embedding is the mean of the last layer's
//! token vectors over the real tokens, scaled to length 1, as sentence-transformers makes it,
//! so the cosine of two is their dot product.
//!
//! The library uses it two ways ([`crate::query`]): a query word the word table does not
//! know is mapped to the detector label it is nearest to, when near enough; and a query is
//! matched against what was said by meaning, not only word for word.
//!
//! The model comes from `scripts/fetch-minilm` (`$FAVE_MODELS/all-MiniLM-L6-v2`, or
//! `FAVE_EMBED_DIR`); nothing is downloaded at run time. It is loaded once, on a thread of
//! its own after the orchestrator starts; until it is there (or when it is missing) queries
//! are read with the word table alone, and the answers say so.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

/// The model's directory name under `$FAVE_MODELS`.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// The length of an embedding.
pub const DIM: usize = 384;
/// sentence-transformers' `max_seq_length` for this model: longer texts are cut.
const MAX_TOKENS: usize = 256;

/// Where the model is: `FAVE_EMBED_DIR`, else `$FAVE_MODELS/all-MiniLM-L6-v2`, else
/// `~/.cache/fave-tools/models/all-MiniLM-L6-v2`.
pub fn model_dir() -> PathBuf {
    fave_common::config::model_dir("FAVE_EMBED_DIR", MODEL_NAME)
}

/// A loaded model and its tokenizer.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
}

impl Embedder {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let read = |name: &str| dir.join(name);
        let config: Config = serde_json::from_slice(
            &std::fs::read(read("config.json"))
                .with_context(|| format!("reading {}", read("config.json").display()))?,
        )
        .context("config.json is not a BERT configuration")?;
        let weights = read("model.safetensors");
        if !weights.is_file() {
            anyhow::bail!("no {} (scripts/fetch-minilm fetches it)", weights.display());
        }
        let bytes =
            std::fs::read(&weights).with_context(|| format!("reading {}", weights.display()))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DTYPE, &Device::Cpu)?;
        let model = BertModel::load(vb, &config).context("loading the BERT weights")?;
        let mut tokenizer = Tokenizer::from_file(read("tokenizer.json"))
            .map_err(|e| anyhow::anyhow!("reading tokenizer.json: {e}"))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| anyhow::anyhow!("tokenizer truncation: {e}"))?;
        Ok(Self { model, tokenizer })
    }

    /// The embeddings of `texts`, each of length [`DIM`] and norm 1, in order.
    pub fn embed(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        let rows = |f: fn(&tokenizers::Encoding) -> &[u32]| -> anyhow::Result<Tensor> {
            let rows = encodings
                .iter()
                .map(|e| Tensor::new(f(e), &Device::Cpu))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Tensor::stack(&rows, 0)?)
        };
        let ids = rows(tokenizers::Encoding::get_ids)?;
        let mask = rows(tokenizers::Encoding::get_attention_mask)?;
        let hidden = self.model.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
        // Mean over the real tokens (padding masked out), then to unit length.
        let mask = mask.to_dtype(DTYPE)?.unsqueeze(2)?;
        let mean = hidden
            .broadcast_mul(&mask)?
            .sum(1)?
            .broadcast_div(&mask.sum(1)?)?;
        let unit = mean.broadcast_div(&mean.sqr()?.sum_keepdim(1)?.sqrt()?)?;
        Ok(unit.to_vec2::<f32>()?)
    }
}

/// The cosine of two unit vectors: their dot product.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The embedder and the embeddings of the detector's labels: what the query reader asks of
/// a language model ([`crate::query::Meaning`]).
pub struct Semantic {
    embedder: Embedder,
    labels: Vec<(&'static str, Vec<f32>)>,
}

impl Semantic {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let embedder = Embedder::load(dir)?;
        // The labels as coco.names spells them: what the thresholds were calibrated on.
        let embedded = embedder.embed(crate::query::LABELS)?;
        let labels = crate::query::LABELS.iter().copied().zip(embedded).collect();
        Ok(Self { embedder, labels })
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// The label nearest to `text` by meaning, their cosine however low, and how much
    /// nearer it is than the next label.
    pub fn nearest(&self, text: &str) -> anyhow::Result<(&'static str, f32, f32)> {
        let wanted = self.embedder.embed(&[text])?;
        let wanted = wanted.first().context("no embedding")?;
        let mut near: Vec<(&'static str, f32)> = self
            .labels
            .iter()
            .map(|(label, e)| (*label, cosine(wanted, e)))
            .collect();
        near.sort_by(|a, b| b.1.total_cmp(&a.1));
        match near.as_slice() {
            [first, second, ..] => Ok((first.0, first.1, first.1 - second.1)),
            _ => anyhow::bail!("fewer than two labels"),
        }
    }
}

impl crate::query::Meaning for Semantic {
    fn label_of(&self, word: &str) -> Option<(&'static str, f32)> {
        match self.nearest(word) {
            Ok((label, similarity, margin))
                if similarity >= crate::query::LABEL_SIMILARITY
                    && margin >= crate::query::LABEL_MARGIN =>
            {
                Some((label, similarity))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "embedding a query word failed");
                None
            }
        }
    }

    fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        self.embedder.embed(texts).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "embedding failed");
            Vec::new()
        })
    }
}

/// A loaded model as what the query reader asks of one, or none.
pub fn reader(model: &Option<std::sync::Arc<Semantic>>) -> Option<&dyn crate::query::Meaning> {
    model.as_deref().map(|m| m as &dyn crate::query::Meaning)
}

/// The model as the orchestrator holds it: loading on a thread of its own from start, or
/// off. Queries and answers ask for it ([`Model::get`]) and read with the word table alone
/// when it is off or failed to load (said once in the log).
pub struct Model {
    loading: Option<fave_common::readiness::Loading<Semantic>>,
    warned: std::sync::atomic::AtomicBool,
}

impl Model {
    /// Starts loading the model from `dir`, or none when `dir` is `None`.
    pub fn start(dir: Option<PathBuf>, timeout: std::time::Duration) -> Self {
        Self {
            loading: dir.map(|dir| {
                fave_common::readiness::Loading::start(MODEL_NAME, timeout, move || {
                    Semantic::load(&dir).map_err(|e| format!("{e:#}"))
                })
            }),
            warned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The model once loaded (waiting while it loads); `None` when off or failed.
    pub async fn get(&self) -> Option<std::sync::Arc<Semantic>> {
        match self.loading.as_ref()?.get().await {
            Ok(model) => Some(model),
            Err(e) => {
                if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(error = %e, "queries are read with the word table alone");
                }
                None
            }
        }
    }
}
