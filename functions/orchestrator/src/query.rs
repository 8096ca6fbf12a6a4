//! Query understanding and clip ranking.
//!
//! [`understand`] turns a free-text query ("find scenes with cars", "a dog or a cat") into the
//! COCO labels of the yolov3-tiny detector, spelled as Darknet's `coco.names` spells them:
//!
//! 1. The text is lower-cased and split on anything that is not a letter or digit (apostrophes
//!    are dropped first, so "dog's" reads as "dogs"). Single characters and numbers are ignored.
//! 2. Two-word phrases are tried before single words ("sports ball", "hair dryer"), so "sports"
//!    is never reported as unknown when it is part of a label.
//! 3. Stop words ([`STOP_WORDS`]) are skipped. These include verbs of motion ("walking",
//!    "driving"): the detector sees objects in single frames, not actions, so "people walking"
//!    means "people".
//! 4. Other words are looked up as written, then through an irregular-plural table, then with
//!    the regular plural endings removed (-ies→y, -es after s/x/ch/sh/z, -s), against the labels
//!    themselves and a table of synonyms and categories ([`SYNONYMS`]).
//! 5. Words that still match nothing are kept in [`QueryPlan::unknown`] so the caller can tell
//!    the user. Negation is not understood: "no", "not" and "without" are reported as unknown.
//!
//! [`rank`] scores each clip's detections against the plan; see its documentation.

/// The 80 labels of the detector, as spelled in Darknet's `coco.names`.
#[rustfmt::skip]
pub const LABELS: &[&str] = &[
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa",
    "pottedplant", "bed", "diningtable", "toilet", "tvmonitor", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
];

/// Words that carry no object: articles, connectives, pronouns, request verbs, words for the
/// video itself, and verbs of motion (a detector sees objects, not what they are doing).
#[rustfmt::skip]
pub const STOP_WORDS: &[&str] = &[
    // Articles, connectives, prepositions, pronouns.
    "a", "an", "the", "of", "and", "or", "in", "on", "at", "by", "from", "into", "near", "next",
    "to", "for", "with", "where", "there", "is", "are", "be", "any", "some", "all", "that",
    "which", "this", "these", "those", "both", "either", "i", "me", "my", "we", "us", "you",
    "it", "them", "their", "more", "many", "lots", "lot", "few", "just", "only", "also",
    // Requests.
    "find", "show", "please", "want", "see", "look", "get", "give", "search", "list", "display",
    "containing", "contain", "contains", "has", "have", "having", "featuring", "including",
    "visible", "appear", "appears",
    // The video itself.
    "video", "videos", "scene", "scenes", "clip", "clips", "moment", "moments", "frame",
    "frames", "shot", "shots", "footage",
    // Verbs of motion and posture.
    "walking", "running", "driving", "riding", "sitting", "standing", "moving", "crossing",
    "playing", "flying", "parked", "eating", "holding", "carrying", "jumping",
];

/// Irregular plurals, mapped to the singular looked up in the label and synonym tables.
const IRREGULAR: &[(&str, &str)] = &[
    ("people", "person"),
    ("men", "man"),
    ("women", "woman"),
    ("children", "child"),
    ("mice", "mouse"),
    ("knives", "knife"),
    ("wives", "wife"),
    ("cattle", "cow"),
    ("geese", "goose"),
];

/// What "vehicles" means here.
const VEHICLES: &[&str] = &["car", "truck", "bus", "motorbike"];
/// The animal labels.
#[rustfmt::skip]
const ANIMALS: &[&str] = &[
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
];
/// The food labels.
#[rustfmt::skip]
const FOOD: &[&str] = &[
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake",
];

/// Synonyms, categories and alternative spellings (one or two words each), mapped to labels.
/// Words that are labels themselves ("car", "sofa") need no entry.
#[rustfmt::skip]
pub const SYNONYMS: &[(&[&str], &[&str])] = &[
    (&["human", "man", "woman", "child", "kid", "boy", "girl", "adult", "baby", "pedestrian",
       "player"], &["person"]),
    (&["vehicle"], VEHICLES),
    (&["automobile", "auto"], &["car"]),
    (&["motorcycle", "motor bike", "scooter"], &["motorbike"]),
    // A "bike" is mostly a bicycle; the motor kind is usually called a motorbike or motorcycle.
    (&["bike", "cycle"], &["bicycle"]),
    (&["plane", "airplane", "aircraft"], &["aeroplane"]),
    (&["ship"], &["boat"]),
    (&["lorry"], &["truck"]),
    (&["traffic signal"], &["traffic light"]),
    (&["hydrant"], &["fire hydrant"]),
    (&["animal"], ANIMALS),
    (&["pet"], &["cat", "dog"]),
    (&["puppy"], &["dog"]),
    (&["kitten"], &["cat"]),
    (&["ball", "football", "soccer", "soccer ball"], &["sports ball"]),
    (&["baseball"], &["baseball bat", "baseball glove", "sports ball"]),
    (&["racket", "racquet"], &["tennis racket"]),
    (&["tv", "television", "monitor", "tv monitor"], &["tvmonitor"]),
    (&["couch"], &["sofa"]),
    (&["table", "dining table"], &["diningtable"]),
    (&["plant", "potted plant"], &["pottedplant"]),
    (&["phone", "mobile", "cellphone", "smartphone", "mobile phone"], &["cell phone"]),
    (&["computer"], &["laptop"]),
    (&["fridge"], &["refrigerator"]),
    (&["hair dryer", "hairdryer"], &["hair drier"]),
    (&["teddy"], &["teddy bear"]),
    (&["mug"], &["cup"]),
    (&["bag"], &["backpack", "handbag", "suitcase"]),
    (&["luggage"], &["suitcase"]),
    (&["furniture"], &["chair", "sofa", "bed", "diningtable"]),
    (&["cutlery"], &["fork", "knife", "spoon"]),
    (&["food"], FOOD),
    (&["fruit"], &["banana", "apple", "orange"]),
    (&["doughnut"], &["donut"]),
    (&["hotdog"], &["hot dog"]),
];

/// What a query asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPlan {
    /// The query as given.
    pub text: String,
    /// Each wanted concept: the query word(s) as written and the labels it maps to.
    pub terms: Vec<Term>,
    /// Content words that map to no label (reported to the user, never silently dropped).
    pub unknown: Vec<String>,
}

/// One wanted concept of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// The word or two-word phrase as written (lower-cased).
    pub word: String,
    /// The detector labels it stands for.
    pub labels: Vec<&'static str>,
}

impl QueryPlan {
    /// Every label any term asks for, sorted and without duplicates.
    #[must_use]
    pub fn labels(&self) -> Vec<&'static str> {
        let mut labels: Vec<&'static str> = self
            .terms
            .iter()
            .flat_map(|t| t.labels.iter().copied())
            .collect();
        labels.sort_unstable();
        labels.dedup();
        labels
    }
}

/// Reads a free-text query into the detector labels it asks for (see the module docs).
#[must_use]
pub fn understand(query: &str) -> QueryPlan {
    let tokens = tokenise(query);
    let mut terms: Vec<Term> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if let Some(next) = tokens.get(i + 1) {
            let phrase = format!("{} {next}", tokens[i]);
            if let Some(labels) = lookup(&phrase) {
                push_term(&mut terms, phrase, labels);
                i += 2;
                continue;
            }
        }
        let word = &tokens[i];
        if !STOP_WORDS.contains(&word.as_str()) {
            match lookup(word) {
                Some(labels) => push_term(&mut terms, word.clone(), labels),
                None if !unknown.contains(word) => unknown.push(word.clone()),
                None => {}
            }
        }
        i += 1;
    }
    QueryPlan {
        text: query.to_string(),
        terms,
        unknown,
    }
}

/// Lower-cased words of the query; apostrophes are dropped, single characters and numbers
/// skipped.
fn tokenise(query: &str) -> Vec<String> {
    query
        .to_lowercase()
        .replace(['\'', '\u{2019}'], "")
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| t.chars().count() > 1 && !t.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .collect()
}

/// Adds a term unless an earlier term already asks for exactly the same labels.
fn push_term(terms: &mut Vec<Term>, word: String, labels: &'static [&'static str]) {
    if !terms.iter().any(|t| t.labels == labels) {
        terms.push(Term {
            word,
            labels: labels.to_vec(),
        });
    }
}

/// Labels for a word or phrase, trying it as written, then each singular form of its last word.
fn lookup(text: &str) -> Option<&'static [&'static str]> {
    let (head, last) = match text.rsplit_once(' ') {
        Some((head, last)) => (format!("{head} "), last),
        None => (String::new(), text),
    };
    std::iter::once(last.to_string())
        .chain(singulars(last))
        .find_map(|form| lookup_exact(&format!("{head}{form}")))
}

/// Labels for exactly this word or phrase: a label itself or a synonym.
fn lookup_exact(text: &str) -> Option<&'static [&'static str]> {
    if let Some(i) = LABELS.iter().position(|&l| l == text) {
        return Some(&LABELS[i..=i]);
    }
    SYNONYMS
        .iter()
        .find(|(words, _)| words.contains(&text))
        .map(|&(_, labels)| labels)
}

/// Possible singulars of a word, most likely first (an empty list if it does not look plural).
fn singulars(word: &str) -> Vec<String> {
    if let Some(&(_, singular)) = IRREGULAR.iter().find(|(plural, _)| *plural == word) {
        return vec![singular.to_string()];
    }
    let mut forms = Vec::new();
    if let Some(stem) = word.strip_suffix("ies").filter(|s| s.len() > 1) {
        forms.push(format!("{stem}y"));
    }
    if let Some(stem) = word.strip_suffix("es")
        && ["s", "x", "z", "ch", "sh"]
            .iter()
            .any(|end| stem.ends_with(end))
    {
        forms.push(stem.to_string());
    }
    if let Some(stem) = word
        .strip_suffix('s')
        .filter(|s| !s.ends_with('s') && s.len() > 1)
    {
        forms.push(stem.to_string());
    }
    forms
}

/// One clip's evidence, as the caller gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipEvidence<'a> {
    /// The clip's identifier.
    pub clip: &'a str,
    /// Start of the clip in the video, in seconds.
    pub start_s: f64,
    /// End of the clip in the video, in seconds.
    pub end_s: f64,
    /// (label, best score in the clip, number of frames in which it was detected)
    pub labels: Vec<(&'a str, f32, usize)>,
    /// Number of frames analysed in the clip.
    pub frames: usize,
}

/// A clip that answers the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// The clip's identifier.
    pub clip: String,
    /// Start of the clip in the video, in seconds.
    pub start_s: f64,
    /// End of the clip in the video, in seconds.
    pub end_s: f64,
    /// Sum over matched terms of best score × (0.5 + 0.5 × share of frames with the label).
    pub score: f64,
    /// Human-readable reasons, one per matched term, e.g. "car 0.81 in 3 of 8 frames".
    pub why: Vec<String>,
    /// The labels that matched, one per matched term, without duplicates.
    pub matched: Vec<&'static str>,
}

/// Ranks clips by how well they answer the plan; clips matching no term are left out.
///
/// For each term, the clip's best label of that term scores
/// `best_score × (0.5 + 0.5 × frames_with_label / max(frames, 1))`, so a label seen throughout
/// the clip counts up to twice as much as one seen in a single frame. Term scores are summed.
/// A clip matching more terms always ranks above one matching fewer; then higher score; then
/// earlier start.
#[must_use]
pub fn rank(plan: &QueryPlan, clips: &[ClipEvidence<'_>]) -> Vec<Match> {
    let mut scored: Vec<(usize, Match)> = clips
        .iter()
        .filter_map(|clip| score_clip(plan, clip))
        .collect();
    scored.sort_by(|(terms_a, a), (terms_b, b)| {
        terms_b
            .cmp(terms_a)
            .then_with(|| b.score.total_cmp(&a.score))
            .then_with(|| a.start_s.total_cmp(&b.start_s))
            .then_with(|| a.clip.cmp(&b.clip))
    });
    scored.into_iter().map(|(_, m)| m).collect()
}

/// The best evidence for one label of a term: (label, score, frames, weighted value).
type Hit = (&'static str, f32, usize, f64);

/// A clip's match and the number of terms it matched, or `None` if it matches no term.
fn score_clip(plan: &QueryPlan, clip: &ClipEvidence<'_>) -> Option<(usize, Match)> {
    let hits: Vec<Hit> = plan
        .terms
        .iter()
        .filter_map(|term| best_hit(term, clip))
        .collect();
    if hits.is_empty() {
        return None;
    }
    let mut matched: Vec<&'static str> = Vec::new();
    for &(label, ..) in &hits {
        if !matched.contains(&label) {
            matched.push(label);
        }
    }
    let m = Match {
        clip: clip.clip.to_string(),
        start_s: clip.start_s,
        end_s: clip.end_s,
        score: hits.iter().map(|hit| hit.3).sum(),
        why: hits
            .iter()
            .map(|&(label, score, seen, _)| {
                format!("{label} {score:.2} in {seen} of {} frames", clip.frames)
            })
            .collect(),
        matched,
    };
    Some((hits.len(), m))
}

/// The term's label with the highest weighted value in the clip, if any of them was detected.
fn best_hit(term: &Term, clip: &ClipEvidence<'_>) -> Option<Hit> {
    let frames = clip.frames.max(1) as f64;
    term.labels
        .iter()
        .flat_map(|&label| {
            clip.labels
                .iter()
                .filter(move |(seen, ..)| seen.eq_ignore_ascii_case(label))
                .map(move |&(_, score, seen)| {
                    let share = (seen as f64 / frames).min(1.0);
                    (label, score, seen, f64::from(score) * (0.5 + 0.5 * share))
                })
        })
        .max_by(|a, b| a.3.total_cmp(&b.3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(plan: &QueryPlan) -> Vec<(&str, Vec<&str>)> {
        let terms = plan.terms.iter();
        terms.map(|t| (t.word.as_str(), t.labels.clone())).collect()
    }

    fn clip<'a>(clip: &'a str, start_s: f64, labels: &[(&'a str, f32, usize)]) -> ClipEvidence<'a> {
        let labels = labels.to_vec();
        let (end_s, frames) = (start_s + 2.0, 10);
        ClipEvidence {
            clip,
            start_s,
            end_s,
            labels,
            frames,
        }
    }

    fn order(matches: &[Match]) -> Vec<&str> {
        matches.iter().map(|m| m.clip.as_str()).collect()
    }

    #[test]
    fn queries_map_to_labels() {
        let cases: &[(&str, &[&str])] = &[
            ("vehicles", &["bus", "car", "motorbike", "truck"]),
            ("show me a dog or a cat", &["cat", "dog"]),
            ("bicycles and persons", &["bicycle", "person"]),
            ("Knives, mice and children", &["knife", "mouse", "person"]),
            ("horses and buses", &["bus", "horse"]),
            ("teddy bears", &["teddy bear"]),
            ("hair-dryers on tables", &["diningtable", "hair drier"]),
            ("the dog's ball", &["dog", "sports ball"]),
        ];
        for &(query, want) in cases {
            let plan = understand(query);
            assert_eq!(plan.labels(), want, "{query}");
            assert!(plan.unknown.is_empty(), "{query}: {:?}", plan.unknown);
        }
    }

    #[test]
    fn terms_keep_the_words_as_written() {
        let plan = understand("find scenes with cars");
        assert_eq!(words(&plan), vec![("cars", vec!["car"])]);
        let plan = understand("people walking");
        assert_eq!(words(&plan), vec![("people", vec!["person"])]);
        assert!(plan.unknown.is_empty());
    }

    #[test]
    fn two_word_phrases_come_first() {
        let plan = understand("a sports ball");
        assert_eq!(words(&plan), vec![("sports ball", vec!["sports ball"])]);
        assert!(plan.unknown.is_empty());
    }

    #[test]
    fn unknown_words_are_reported() {
        let plan = understand("find scenes with unicorns");
        assert!(plan.terms.is_empty());
        assert_eq!(plan.unknown, vec!["unicorns"]);
        let plan = understand("cars and zebras and flurbs, flurbs");
        let want = vec![("cars", vec!["car"]), ("zebras", vec!["zebra"])];
        assert_eq!(words(&plan), want);
        assert_eq!(plan.unknown, vec!["flurbs"]);
    }

    #[test]
    fn every_synonym_names_real_labels() {
        assert_eq!(LABELS.len(), 80);
        for (words, labels) in SYNONYMS {
            let real = labels.iter().all(|l| LABELS.contains(l));
            assert!(real, "{words:?} -> {labels:?}");
        }
    }

    #[test]
    fn frame_share_counts() {
        let mut steady = clip("steady", 5.0, &[("car", 0.8, 4)]);
        steady.frames = 4;
        let clips = [clip("rare", 0.0, &[("car", 0.9, 1)]), steady];
        let ranked = rank(&understand("cars"), &clips);
        assert_eq!(order(&ranked), vec!["steady", "rare"]);
        assert!((ranked[0].score - 0.8).abs() < 1e-6);
        assert_eq!(ranked[0].why, vec!["car 0.80 in 4 of 4 frames"]);
    }

    #[test]
    fn more_terms_beat_a_stronger_single_term() {
        let clips = [
            clip("strong car", 0.0, &[("car", 0.99, 10)]),
            clip("both", 9.0, &[("car", 0.3, 1), ("person", 0.3, 1)]),
        ];
        let ranked = rank(&understand("cars with people"), &clips);
        assert_eq!(order(&ranked), vec!["both", "strong car"]);
        assert_eq!(ranked[0].matched, vec!["car", "person"]);
        assert_eq!(ranked[0].why.len(), 2);
    }

    #[test]
    fn non_matching_clips_are_excluded() {
        let clips = [
            clip("none", 0.0, &[("car", 0.9, 3)]),
            clip("dog", 1.0, &[("dog", 0.5, 1)]),
        ];
        assert_eq!(
            order(&rank(&understand("a dog or a cat"), &clips)),
            vec!["dog"]
        );
        assert!(rank(&understand("unicorns"), &clips).is_empty());
    }

    #[test]
    fn ties_go_to_the_earlier_clip() {
        let clips = [
            clip("late", 8.0, &[("truck", 0.6, 2)]),
            clip("early", 2.0, &[("bus", 0.6, 2)]),
        ];
        assert_eq!(
            order(&rank(&understand("vehicles"), &clips)),
            vec!["early", "late"]
        );
    }
}
