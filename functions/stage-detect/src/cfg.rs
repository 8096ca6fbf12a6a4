//! The few facts about the network that live only in the Darknet `.cfg`:
//! input size and, per `[yolo]` section, its anchors and class count.
//!
//! The ONNX graph carries the convolution weights but not these, so the model
//! directory keeps the cfg next to `model.onnx` and we parse just enough of it.

use std::collections::HashMap;

use crate::DetectError;

/// Input size of the network and its YOLO heads, in cfg order (which is also
/// the order of the ONNX outputs `yolo_0`, `yolo_1`, … written by the converter).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NetSpec {
    pub width: usize,
    pub height: usize,
    pub heads: Vec<HeadSpec>,
}

/// One `[yolo]` section.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeadSpec {
    /// (w, h) in network-input pixels of the anchors this head predicts, i.e.
    /// `anchors[mask[i]]` for each i.
    pub anchors: Vec<(f32, f32)>,
    pub classes: usize,
}

fn cfg_err(msg: impl Into<String>) -> DetectError {
    DetectError::Cfg(msg.into())
}

fn numbers<T: std::str::FromStr>(key: &str, value: &str) -> Result<Vec<T>, DetectError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| cfg_err(format!("bad number {s:?} in `{key}`")))
        })
        .collect()
}

fn get<'a>(
    sec: &'a HashMap<String, String>,
    name: &str,
    key: &str,
) -> Result<&'a str, DetectError> {
    sec.get(key)
        .map(String::as_str)
        .ok_or_else(|| cfg_err(format!("[{name}] has no `{key}`")))
}

/// Parse the text of a Darknet cfg.
pub(crate) fn parse(text: &str) -> Result<NetSpec, DetectError> {
    let mut sections: Vec<(String, HashMap<String, String>)> = Vec::new();
    for raw in text.lines() {
        let line = raw.split(['#', ';']).next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.trim().to_owned(), HashMap::new()));
        } else if let Some((k, v)) = line.split_once('=') {
            let (_, opts) = sections
                .last_mut()
                .ok_or_else(|| cfg_err(format!("option outside any section: {line:?}")))?;
            opts.insert(k.trim().to_owned(), v.trim().to_owned());
        } else {
            return Err(cfg_err(format!("unparseable line {line:?}")));
        }
    }

    let (first, net) = sections.first().ok_or_else(|| cfg_err("empty cfg"))?;
    if first != "net" && first != "network" {
        return Err(cfg_err("cfg does not start with [net]"));
    }
    let dim = |key: &str| -> Result<usize, DetectError> {
        get(net, "net", key)?
            .parse()
            .map_err(|_| cfg_err(format!("bad [net] {key}")))
    };
    let (width, height) = (dim("width")?, dim("height")?);

    let mut heads = Vec::new();
    for (name, sec) in sections.iter().filter(|(n, _)| n == "yolo") {
        let all: Vec<f32> = numbers("anchors", get(sec, name, "anchors")?)?;
        if !all.len().is_multiple_of(2) {
            return Err(cfg_err("odd number of anchor values"));
        }
        let pairs: Vec<(f32, f32)> = all.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        // Without `mask` a yolo layer uses every anchor (Darknet's default).
        let mask: Vec<usize> = match sec.get("mask") {
            Some(m) => numbers("mask", m)?,
            None => (0..pairs.len()).collect(),
        };
        let anchors = mask
            .iter()
            .map(|&i| {
                pairs
                    .get(i)
                    .copied()
                    .ok_or_else(|| cfg_err(format!("mask index {i} out of range")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let classes = get(sec, name, "classes")?
            .parse()
            .map_err(|_| cfg_err("bad [yolo] classes"))?;
        heads.push(HeadSpec { anchors, classes });
    }
    if heads.is_empty() {
        return Err(cfg_err("no [yolo] section"));
    }
    Ok(NetSpec {
        width,
        height,
        heads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yolo_heads_with_masks() {
        let text = "[net]\nwidth=416\nheight=320 # comment\n[convolutional]\nfilters=255\n\
                    [yolo]\nmask = 3,4,5\nanchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319\nclasses=80\n\
                    [yolo]\nmask = 1,2,3\nanchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319\nclasses=80\n";
        let spec = parse(text).expect("valid cfg");
        assert_eq!((spec.width, spec.height), (416, 320));
        assert_eq!(spec.heads.len(), 2);
        assert_eq!(
            spec.heads[0].anchors,
            vec![(81.0, 82.0), (135.0, 169.0), (344.0, 319.0)]
        );
        assert_eq!(
            spec.heads[1].anchors,
            vec![(23.0, 27.0), (37.0, 58.0), (81.0, 82.0)]
        );
        assert_eq!(spec.heads[1].classes, 80);
    }

    #[test]
    fn rejects_bad_mask() {
        let text = "[net]\nwidth=416\nheight=416\n[yolo]\nmask=9\nanchors=1,2\nclasses=1\n";
        assert!(matches!(parse(text), Err(DetectError::Cfg(_))));
    }
}
