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
//! 5. Words that still match nothing are kept in [`QueryPlan::unknown`]. They may be words
//!    someone says: [`rank`] looks for them in the clips' transcripts, and [`unheard`] gives
//!    those no clip's speech contains, so the caller can tell the user.
//! 6. Structure the table reads around the objects: a count before one ("two dogs", "at
//!    least 3 people", "more than two cars") asks for a frame with that many boxes of it
//!    ([`Term::at_least`]); objects joined by "and" or "with" and never by "or" ("a person
//!    and a bicycle") must be seen in the same frame ([`QueryPlan::together`]); an object
//!    after "without", "no" or "not" ("a street without cars") must be seen in none of the
//!    clip's frames ([`QueryPlan::without`]).
//!
//! Speech is asked for in two ways, both kept in [`QueryPlan::phrases`]: a quoted phrase
//! (`"open the door"`, `'judge'`, curly quotes too; an apostrophe inside a word is not a
//! quote), and the words after a verb of speech ([`SPEECH_CUES`]: "says", "mentions",
//! "talking about", …) up to the end of the clause (a comma, or "and", "or", "while", …).
//! "find where someone says 'judge'" asks for the phrase "judge" and nothing else.
//!
//! [`rank`] scores each clip's detections and transcript against the plan; see its
//! documentation.
//!
//! With a language model ([`Meaning`], all-MiniLM-L6-v2 in `embed.rs`), [`understand_with`]
//! reads more than the table: a word the table does not know becomes the detector label
//! nearest to it by meaning when near enough ([`LABEL_SIMILARITY`]; "sedan" → car), and a
//! phrase after a verb of speech also matches a transcript segment that says the same in
//! other words ([`SAID_SIMILARITY`]; "talking about money" finds "I need the cash"). A
//! quoted phrase still matches word for word only. The table stays the override: a word it
//! knows is never asked of the model.

use std::collections::BTreeMap;

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
    "someone", "somebody", "anyone", "anybody", "everyone", "he", "she", "they", "him", "her",
    // Requests.
    "find", "show", "please", "want", "see", "look", "get", "give", "search", "list", "display",
    "containing", "contain", "contains", "has", "have", "having", "featuring", "including",
    "visible", "appear", "appears", "hear", "hears", "heard", "hearing", "listen",
    // The video itself.
    "video", "videos", "scene", "scenes", "clip", "clips", "moment", "moments", "frame",
    "frames", "shot", "shots", "footage",
    // Verbs of motion and posture.
    "walking", "running", "driving", "riding", "sitting", "standing", "moving", "crossing",
    "playing", "flying", "parked", "eating", "holding", "carrying", "jumping",
];

/// Verbs of speech: the words after one, up to the end of its clause, are what is said.
#[rustfmt::skip]
pub const SPEECH_CUES: &[&str] = &[
    "say", "says", "said", "saying", "speak", "speaks", "speaking", "spoke", "spoken",
    "mention", "mentions", "mentioned", "mentioning", "talk", "talks", "talking", "talked",
    "utter", "utters", "uttered", "uttering", "shout", "shouts", "shouted", "shouting",
    "yell", "yells", "yelled", "yelling",
];

/// Words between a verb of speech and what is said ("says the word judge", "talks about",
/// "hear someone say"), skipped.
#[rustfmt::skip]
const CUE_FILLERS: &[&str] = &[
    "the", "word", "words", "phrase", "about", "that", "something", "like", "someone",
    "somebody", "anyone", "anybody", "everyone", "he", "she", "they", "you", "we", "i",
];

/// Words that end what a verb of speech introduces ("says hello and a dog").
#[rustfmt::skip]
const CLAUSE_ENDS: &[&str] = &["and", "or", "but", "while", "whilst", "where", "when", "with"];

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

/// A word the table does not know is read as the label nearest to it by meaning when their
/// cosine is at least this and the label is nearer by [`LABEL_MARGIN`] than any other.
/// Calibrated on 46 words outside the table (README.md, "The video library"): "sedan" → car
/// (0.69), "lorry" → truck (0.54), "parrot" → bird, while "street" (0.42), "money", "stool"
/// (toilet 0.67, chair 0.60: too close to call) and "river" (boat 0.53, sink 0.43) map to
/// nothing.
pub const LABEL_SIMILARITY: f32 = 0.5;

/// How much nearer than the next label the nearest must be ([`LABEL_SIMILARITY`]).
pub const LABEL_MARGIN: f32 = 0.1;

/// A phrase after a verb of speech matches a transcript segment by meaning when the cosine
/// of its clause ("talking about money") and the segment is at least this. Measured: that
/// clause against "I need the cash by Friday." 0.32, "He paid the bill with his credit
/// card." 0.30, "The bank called about the loan." 0.35; against "The weather is lovely
/// today." 0.02, "Please open the door and turn on the lights." 0.09.
pub const SAID_SIMILARITY: f32 = 0.28;

/// What a language model adds to the word table (`embed::Semantic`).
pub trait Meaning: Send + Sync {
    /// The label nearest to `word` by meaning, and their cosine, if it is at least
    /// [`LABEL_SIMILARITY`] and nearer than the others by [`LABEL_MARGIN`].
    fn label_of(&self, word: &str) -> Option<(&'static str, f32)>;
    /// The unit-length embeddings of `texts`, in order (none when the model failed).
    fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>>;
}

/// What a query asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPlan {
    /// The query as given.
    pub text: String,
    /// Each wanted object: the query word(s) as written and the labels it maps to.
    pub terms: Vec<Term>,
    /// What someone should be heard saying: quoted phrases and the words after a verb of
    /// speech, lower-cased, one space between words, apostrophes dropped.
    pub phrases: Vec<String>,
    /// Content words that map to no label: looked for in what is said, and reported to the
    /// user when no clip's speech has them ([`unheard`]), never silently dropped.
    pub unknown: Vec<String>,
    /// Of `phrases`, those that came after a verb of speech (not quoted), with their
    /// embedding when a model read the query: these also match by meaning.
    pub meanings: Vec<(String, Vec<f32>)>,
    /// Objects that must not be seen ("without cars"): a clip with any of their labels does
    /// not answer.
    pub without: Vec<Term>,
    /// The objects must be seen in one frame together ("a person and a bicycle").
    pub together: bool,
    /// The phrases that came after a verb of speech, each with its clause from the verb on
    /// ("talking about money"): what is embedded, since a sentence matches a sentence by
    /// meaning far better than a lone word does.
    pub cued: Vec<(String, String)>,
}

/// One wanted concept of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// The word or two-word phrase as written (lower-cased).
    pub word: String,
    /// The detector labels it stands for.
    pub labels: Vec<&'static str>,
    /// Set when the language model mapped it (the table did not know it): the cosine.
    pub similarity: Option<f32>,
    /// How many boxes of it one frame must hold ("two dogs": 2); 1 otherwise.
    pub at_least: usize,
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

/// Reads a free-text query into the detector labels and the speech it asks for (see the
/// module docs).
#[must_use]
pub fn understand(query: &str) -> QueryPlan {
    let (rest, mut phrases) = quoted(query);
    let mut cued: Vec<(String, String)> = Vec::new();
    let mut terms: Vec<Term> = Vec::new();
    let mut without: Vec<Term> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    let all = tokenise(&rest);
    let has = |w: &str| all.iter().any(|t| t == w);
    for clause in rest.split([',', ';', '.', '!', '?', ':']) {
        let tokens = tokenise(clause);
        // A count or a negation read before an object, applied to the next one.
        let (mut count, mut negated) = (None::<usize>, false);
        let mut i = 0;
        while i < tokens.len() {
            let token = tokens[i].as_str();
            if let Some(n) = number(token) {
                let more = i >= 2 && tokens[i - 1] == "than" && tokens[i - 2] == "more";
                count = Some(if more { n + 1 } else { n });
                i += 1;
                continue;
            }
            if matches!(token, "least" | "than") {
                i += 1;
                continue;
            }
            if NEGATIONS.contains(&token) {
                negated = true;
                i += 1;
                continue;
            }
            if SPEECH_CUES.contains(&tokens[i].as_str()) {
                let mut j = i + 1;
                while j < tokens.len()
                    && (CUE_FILLERS.contains(&tokens[j].as_str())
                        || SPEECH_CUES.contains(&tokens[j].as_str()))
                {
                    j += 1;
                }
                let start = j;
                while j < tokens.len() && !CLAUSE_ENDS.contains(&tokens[j].as_str()) {
                    j += 1;
                }
                let said = tokens[start..j].join(" ");
                if !said.is_empty() && !phrases.contains(&said) {
                    cued.push((said.clone(), tokens[i..j].join(" ")));
                    phrases.push(said);
                }
                i = j;
                continue;
            }
            let mut found = None;
            if let Some(next) = tokens.get(i + 1) {
                let phrase = format!("{} {next}", tokens[i]);
                if let Some(labels) = lookup(&phrase) {
                    found = Some((phrase, labels, 2));
                }
            }
            let word = &tokens[i];
            if found.is_none() && !STOP_WORDS.contains(&word.as_str()) {
                match lookup(word) {
                    Some(labels) => found = Some((word.clone(), labels, 1)),
                    None => {
                        if !unknown.contains(word) {
                            unknown.push(word.clone());
                        }
                        (count, negated) = (None, false);
                    }
                }
            }
            match found {
                Some((word, labels, width)) => {
                    let into = if negated { &mut without } else { &mut terms };
                    push_term(into, word, labels, count.unwrap_or(1));
                    (count, negated) = (None, false);
                    i += width;
                }
                None => i += 1,
            }
        }
    }
    let together = terms.len() >= 2 && (has("and") || has("with")) && !has("or");
    QueryPlan {
        text: query.to_string(),
        terms,
        phrases,
        unknown,
        without,
        together,
        meanings: Vec::new(),
        cued,
    }
}

/// Words that exclude the object after them.
const NEGATIONS: &[&str] = &["without", "no", "not", "nor", "except"];

/// A count, in digits or as a word up to twelve.
fn number(token: &str) -> Option<usize> {
    const WORDS: [&str; 12] = [
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve",
    ];
    if token.bytes().all(|b| b.is_ascii_digit()) {
        return token.parse().ok().filter(|n| (1..=1000).contains(n));
    }
    WORDS.iter().position(|w| *w == token).map(|i| i + 1)
}

/// [`understand`], and then what the model reads: each unknown word nearest to a label by
/// meaning becomes a term of that label (unless a term already asks for it), and each phrase
/// after a verb of speech gets its embedding, to match what was said by meaning.
#[must_use]
pub fn understand_with(query: &str, meaning: Option<&dyn Meaning>) -> QueryPlan {
    let mut plan = understand(query);
    let Some(meaning) = meaning else {
        return plan;
    };
    let mut unknown = Vec::new();
    for word in std::mem::take(&mut plan.unknown) {
        match meaning.label_of(&word) {
            Some((label, similarity)) => {
                let i = LABELS.iter().position(|l| *l == label).unwrap_or(0);
                if !plan.terms.iter().any(|t| t.labels == [label]) {
                    plan.terms.push(Term {
                        word,
                        labels: LABELS[i..=i].to_vec(),
                        similarity: Some(similarity),
                        at_least: 1,
                    });
                }
            }
            None => unknown.push(word),
        }
    }
    plan.unknown = unknown;
    let clauses: Vec<&str> = plan
        .cued
        .iter()
        .map(|(_, clause)| clause.as_str())
        .collect();
    let embedded = meaning.embed(&clauses);
    if embedded.len() == clauses.len() {
        plan.meanings = plan
            .cued
            .iter()
            .map(|(phrase, _)| phrase.clone())
            .zip(embedded)
            .collect();
    }
    plan
}

/// The query with its quoted phrases taken out (each leaves a clause break), and the phrases.
/// A quote opens where no letter or digit comes before it and closes where none comes after,
/// so the apostrophes of "dog's" and "don't" are not quotes.
fn quoted(query: &str) -> (String, Vec<String>) {
    let chars: Vec<char> = query.chars().collect();
    let closers = |c: char| -> &'static [char] {
        match c {
            '"' => &['"', '\u{201D}'],
            '\'' => &['\'', '\u{2019}'],
            '\u{201C}' => &['\u{201D}', '"'],
            '\u{2018}' => &['\u{2019}', '\''],
            '\u{AB}' => &['\u{BB}'],
            _ => &[],
        }
    };
    let word_char = |i: usize| chars.get(i).is_some_and(|c| c.is_alphanumeric());
    let mut rest = String::new();
    let mut phrases: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let opens = !closers(c).is_empty() && (i == 0 || !word_char(i - 1));
        let close = opens
            .then(|| {
                (i + 1..chars.len()).find(|&j| closers(c).contains(&chars[j]) && !word_char(j + 1))
            })
            .flatten();
        match close {
            Some(j) => {
                let phrase = spoken_words(&chars[i + 1..j].iter().collect::<String>()).join(" ");
                if !phrase.is_empty() && !phrases.contains(&phrase) {
                    phrases.push(phrase);
                }
                rest.push(',');
                i = j + 1;
            }
            None => {
                rest.push(c);
                i += 1;
            }
        }
    }
    (rest, phrases)
}

/// Words as compared with what is said: lower-cased, apostrophes dropped, split on anything
/// that is not a letter or digit (numbers and single letters kept).
#[must_use]
pub fn spoken_words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(['\'', '\u{2019}'], "")
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Lower-cased words of the query; apostrophes are dropped, single letters skipped (numbers
/// are kept: counts).
fn tokenise(query: &str) -> Vec<String> {
    query
        .to_lowercase()
        .replace(['\'', '\u{2019}'], "")
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| t.chars().count() > 1 || t.chars().all(|c| c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Adds a term unless an earlier term already asks for exactly the same labels (a count
/// then raises the earlier one's).
fn push_term(
    terms: &mut Vec<Term>,
    word: String,
    labels: &'static [&'static str],
    at_least: usize,
) {
    match terms.iter_mut().find(|t| t.labels == labels) {
        Some(t) => t.at_least = t.at_least.max(at_least),
        None => terms.push(Term {
            word,
            labels: labels.to_vec(),
            similarity: None,
            at_least,
        }),
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
    /// What was said in the clip, segment by segment.
    pub speech: Vec<Spoken<'a>>,
    /// Each frame's boxes, by label (frames with none may be left out): for counts,
    /// objects seen together, objects not seen.
    pub frame_labels: &'a [BTreeMap<String, usize>],
}

/// One segment of a clip's transcript.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spoken<'a> {
    /// When it starts in the video, in seconds.
    pub start_s: f64,
    pub text: &'a str,
    /// Its embedding, when the model made one.
    pub meaning: Option<&'a [f32]>,
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
    /// Sum over matched object terms of best score × (0.5 + 0.5 × share of frames with the
    /// label), plus 1 for each phrase or word heard.
    pub score: f64,
    /// Human-readable reasons, one per matched term, e.g. "car 0.81 in 3 of 8 frames",
    /// "said \"judge\" at 12.4 s".
    pub why: Vec<String>,
    /// The labels that matched, one per matched term, without duplicates.
    pub matched: Vec<&'static str>,
    /// The phrases and words heard in the clip.
    pub said: Vec<String>,
}

/// Ranks clips by how well they answer the plan; clips matching no term are left out.
///
/// For each object term, the clip's best label of that term scores
/// `best_score × (0.5 + 0.5 × frames_with_label / max(frames, 1))`, so a label seen throughout
/// the clip counts up to twice as much as one seen in a single frame. Each phrase, and each
/// unknown word, that the clip's transcript contains (word by word, a plural matching its
/// singular) is a term too, scoring 1. Term scores are summed. A clip that both shows an
/// object and has words said ranks above one that only does either; then a clip matching
/// more terms above one matching fewer; then higher score; then earlier start.
#[must_use]
pub fn rank(plan: &QueryPlan, clips: &[ClipEvidence<'_>]) -> Vec<Match> {
    let mut scored: Vec<((usize, usize), Match)> = clips
        .iter()
        .filter_map(|clip| score_clip(plan, clip))
        .collect();
    scored.sort_by(|(key_a, a), (key_b, b)| {
        key_b
            .cmp(key_a)
            .then_with(|| b.score.total_cmp(&a.score))
            .then_with(|| a.start_s.total_cmp(&b.start_s))
            .then_with(|| a.clip.cmp(&b.clip))
    });
    scored.into_iter().map(|(_, m)| m).collect()
}

/// A phrase or word heard in a clip: what, when, and for a match by meaning, the segment and
/// the cosine.
type Heard<'a> = (&'a str, f64, Option<(&'a str, f32)>);

/// The best evidence for one label of a term: (label, score, frames, weighted value).
type Hit = (&'static str, f32, usize, f64);

/// A clip's match and its rank key: the kinds of evidence it matched (objects seen, words
/// heard: 0 to 2) and the number of terms; `None` if it matches no term.
fn score_clip(plan: &QueryPlan, clip: &ClipEvidence<'_>) -> Option<((usize, usize), Match)> {
    // An object that must not be seen, seen: the clip does not answer, whatever else it has.
    let unwanted = plan.without.iter().flat_map(|t| &t.labels).find(|label| {
        clip.labels
            .iter()
            .any(|(seen, ..)| seen.eq_ignore_ascii_case(label))
    });
    if unwanted.is_some() {
        return None;
    }
    let mut hits: Vec<Hit> = plan
        .terms
        .iter()
        .filter_map(|term| best_hit(term, clip))
        .collect();
    // Objects asked for together: every one of them in one frame, or none counts (judged
    // where the frames are known).
    let mut together = None;
    if plan.together && plan.terms.len() >= 2 && !clip.frame_labels.is_empty() {
        let frames = clip
            .frame_labels
            .iter()
            .filter(|frame| plan.terms.iter().all(|t| in_frame(t, frame)))
            .count();
        if frames == 0 || hits.len() < plan.terms.len() {
            hits.clear();
        } else {
            together = Some(frames);
        }
    }
    let heard: Vec<Heard<'_>> = plan
        .phrases
        .iter()
        .chain(&plan.unknown)
        .filter_map(|phrase| match said_at(phrase, &clip.speech) {
            Some(at) => Some((phrase.as_str(), at, None)),
            None => said_like(plan, phrase, &clip.speech)
                .map(|(at, seg, sim)| (phrase.as_str(), at, Some((seg, sim)))),
        })
        .collect();
    if hits.is_empty() && heard.is_empty() {
        // Only objects not to see were asked for: a clip without them answers.
        if plan.terms.is_empty() && plan.phrases.is_empty() && !plan.without.is_empty() {
            let labels: Vec<&str> = plan.without.iter().flat_map(|t| t.labels.clone()).collect();
            let m = Match {
                clip: clip.clip.to_string(),
                start_s: clip.start_s,
                end_s: clip.end_s,
                score: 1.0,
                why: vec![format!(
                    "no {} in {} frames",
                    labels.join(" or "),
                    clip.frames
                )],
                matched: Vec::new(),
                said: Vec::new(),
            };
            return Some(((1, 1), m));
        }
        return None;
    }
    let mut matched: Vec<&'static str> = Vec::new();
    for &(label, ..) in &hits {
        if !matched.contains(&label) {
            matched.push(label);
        }
    }
    let counted = |label: &str| {
        plan.terms
            .iter()
            .find(|t| t.labels.contains(&label))
            .map_or(1, |t| t.at_least)
    };
    let why = hits
        .iter()
        .map(|&(label, score, seen, _)| match counted(label) {
            1 => format!("{label} {score:.2} in {seen} of {} frames", clip.frames),
            n => format!(
                "{n} or more {label} in {seen} of {} frames (best {score:.2})",
                clip.frames
            ),
        })
        .chain(together.map(|n| {
            format!(
                "{} together in {n} of {} frames",
                matched.join(" and "),
                clip.frames
            )
        }))
        .chain(heard.iter().map(|(phrase, at, like)| match like {
            None => format!("said \"{phrase}\" at {at:.1} s"),
            Some((segment, similarity)) => format!(
                "said something like \"{phrase}\" at {at:.1} s: \"{}\" ({similarity:.2})",
                segment.trim()
            ),
        }))
        .collect();
    let m = Match {
        clip: clip.clip.to_string(),
        start_s: clip.start_s,
        end_s: clip.end_s,
        score: hits.iter().map(|hit| hit.3).sum::<f64>() + heard.len() as f64,
        why,
        matched,
        said: heard
            .iter()
            .map(|(phrase, ..)| (*phrase).to_string())
            .collect(),
    };
    let kinds = usize::from(!hits.is_empty()) + usize::from(!heard.is_empty());
    Some(((kinds, hits.len() + heard.len()), m))
}

/// The unknown words of the plan that no clip's transcript contains: what the query said that
/// was understood neither as an object nor as speech.
#[must_use]
pub fn unheard(plan: &QueryPlan, clips: &[ClipEvidence<'_>]) -> Vec<String> {
    plan.unknown
        .iter()
        .filter(|word| !clips.iter().any(|c| said_at(word, &c.speech).is_some()))
        .cloned()
        .collect()
}

/// When `phrase` is first said in `speech` (the start of the segment its first word is in),
/// word by word, across segment boundaries, a plural matching its singular.
fn said_at(phrase: &str, speech: &[Spoken<'_>]) -> Option<f64> {
    let wanted = spoken_words(phrase);
    if wanted.is_empty() {
        return None;
    }
    let words: Vec<(String, f64)> = speech
        .iter()
        .flat_map(|s| {
            spoken_words(s.text)
                .into_iter()
                .map(move |w| (w, s.start_s))
        })
        .collect();
    (0..words.len().checked_sub(wanted.len() - 1)?)
        .find(|&i| {
            wanted
                .iter()
                .zip(&words[i..])
                .all(|(want, (got, _))| same_word(want, got))
        })
        .map(|i| words[i].1)
}

/// The segment of `speech` nearest by meaning to `phrase`, a phrase after a verb of speech
/// with an embedding, when at least [`SAID_SIMILARITY`]: when it starts, its text, the cosine.
fn said_like<'a>(
    plan: &QueryPlan,
    phrase: &str,
    speech: &[Spoken<'a>],
) -> Option<(f64, &'a str, f32)> {
    let (_, wanted) = plan.meanings.iter().find(|(p, _)| p == phrase)?;
    speech
        .iter()
        .filter_map(|s| {
            let got = s.meaning?;
            let similarity: f32 = wanted.iter().zip(got).map(|(a, b)| a * b).sum();
            Some((s.start_s, s.text, similarity))
        })
        .filter(|(.., similarity)| *similarity >= SAID_SIMILARITY)
        .max_by(|a, b| a.2.total_cmp(&b.2))
}

/// The same word, or one the plural of the other.
fn same_word(a: &str, b: &str) -> bool {
    a == b || singulars(a).iter().any(|s| s == b) || singulars(b).iter().any(|s| s == a)
}

/// Whether `frame` holds at least `term.at_least` boxes of one of the term's labels.
fn in_frame(term: &Term, frame: &BTreeMap<String, usize>) -> bool {
    term.labels
        .iter()
        .any(|label| frame.get(*label).is_some_and(|n| *n >= term.at_least))
}

/// The term's label with the highest weighted value in the clip, if any of them was detected
/// (in a frame with at least `at_least` boxes of it, for a counted term).
fn best_hit(term: &Term, clip: &ClipEvidence<'_>) -> Option<Hit> {
    let frames = clip.frames.max(1) as f64;
    if term.at_least > 1 {
        return term
            .labels
            .iter()
            .filter_map(|&label| {
                let seen = clip
                    .frame_labels
                    .iter()
                    .filter(|f| f.get(label).is_some_and(|n| *n >= term.at_least))
                    .count();
                let (_, score, _) = clip
                    .labels
                    .iter()
                    .find(|(l, ..)| l.eq_ignore_ascii_case(label))?;
                (seen > 0).then(|| {
                    let share = (seen as f64 / frames).min(1.0);
                    (label, *score, seen, f64::from(*score) * (0.5 + 0.5 * share))
                })
            })
            .max_by(|a, b| a.3.total_cmp(&b.3));
    }
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
            speech: Vec::new(),
            frame_labels: &[],
        }
    }

    fn saying<'a>(mut c: ClipEvidence<'a>, said: &[(f64, &'a str)]) -> ClipEvidence<'a> {
        c.speech = said
            .iter()
            .map(|&(start_s, text)| Spoken {
                start_s,
                text,
                meaning: None,
            })
            .collect();
        c
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
    fn quoted_phrases_are_speech() {
        let plan = understand(r#"find "Open the door!" or 'judge', “lights”"#);
        assert_eq!(plan.phrases, vec!["open the door", "judge", "lights"]);
        assert!(plan.terms.is_empty() && plan.unknown.is_empty(), "{plan:?}");
        // Apostrophes inside words are not quotes; a quote may hold one.
        let plan = understand("the dog's ball and someone says 'don't go'");
        assert_eq!(plan.labels(), vec!["dog", "sports ball"]);
        assert_eq!(plan.phrases, vec!["dont go"]);
        assert!(plan.unknown.is_empty(), "{plan:?}");
        // An unclosed quote is just a character.
        let plan = understand("cars 'n");
        assert_eq!((plan.labels(), plan.phrases.len()), (vec!["car"], 0));
    }

    #[test]
    fn the_words_after_a_verb_of_speech_are_what_is_said() {
        let plan = understand("find where someone says 'judge'");
        assert_eq!(plan.phrases, vec!["judge"]);
        assert!(plan.terms.is_empty() && plan.unknown.is_empty(), "{plan:?}");
        let plan = understand("someone says judge");
        assert_eq!(plan.phrases, vec!["judge"]);
        assert!(plan.unknown.is_empty(), "{plan:?}");
        let plan = understand("a dog and someone saying hello world, with a car");
        assert_eq!(plan.labels(), vec!["car", "dog"]);
        assert_eq!(plan.phrases, vec!["hello world"]);
        let plan = understand("people talking about the word trucks and a bus");
        assert_eq!(plan.labels(), vec!["bus", "person"]);
        assert_eq!(plan.phrases, vec!["trucks"]);
        // A verb of speech with nothing after it asks for nothing, and is no unknown word.
        let plan = understand("someone talking");
        assert!(
            plan.phrases.is_empty() && plan.unknown.is_empty(),
            "{plan:?}"
        );
        let plan = understand("where you hear somebody say the word stop, and a stop sign");
        assert_eq!(plan.phrases, vec!["stop"]);
        assert_eq!(plan.labels(), vec!["stop sign"]);
        assert!(plan.unknown.is_empty(), "{plan:?}");
    }

    #[test]
    fn clips_with_both_the_objects_and_the_words_come_first() {
        let clips = [
            saying(clip("car only", 0.0, &[("car", 0.9, 10)]), &[]),
            saying(
                clip("words only", 2.0, &[]),
                &[(3.0, "Please open the door.")],
            ),
            saying(
                clip("both", 4.0, &[("car", 0.3, 1)]),
                &[
                    (4.5, "Please open"),
                    (6.25, "the doors and turn on the lights."),
                ],
            ),
            saying(
                clip("neither", 6.0, &[("dog", 0.9, 10)]),
                &[(6.0, "open a window")],
            ),
        ];
        let ranked = rank(&understand("a car, someone says 'open the door'"), &clips);
        // One term each for the others: a phrase heard scores 1, the car 0.9.
        assert_eq!(order(&ranked), vec!["both", "words only", "car only"]);
        // Across two segments, a plural for the singular; timed by where the phrase starts.
        assert_eq!(ranked[0].said, vec!["open the door"]);
        assert_eq!(
            ranked[0].why,
            vec![
                "car 0.30 in 1 of 10 frames",
                "said \"open the door\" at 4.5 s"
            ]
        );
        assert!(ranked[1].matched.is_empty());
        assert!((ranked[1].score - 1.0).abs() < 1e-9);
    }

    #[test]
    fn seen_and_heard_beats_two_things_heard() {
        let clips = [
            saying(
                clip("two words", 0.0, &[]),
                &[(0.0, "the judge and the cover")],
            ),
            saying(
                clip("car and word", 5.0, &[("car", 0.2, 1)]),
                &[(5.0, "a judge")],
            ),
        ];
        let ranked = rank(&understand("a car, judge, cover"), &clips);
        assert_eq!(order(&ranked), vec!["car and word", "two words"]);
    }

    #[test]
    fn unknown_words_someone_says_are_speech_not_unknown() {
        let clips = [
            saying(clip("a", 0.0, &[]), &[(0.0, "Nothing here.")]),
            saying(clip("b", 9.0, &[]), &[(9.5, "All rise, the Judge is in.")]),
        ];
        let plan = understand("judge and flurbs");
        assert_eq!(plan.unknown, vec!["judge", "flurbs"]);
        let ranked = rank(&plan, &clips);
        assert_eq!(order(&ranked), vec!["b"]);
        assert_eq!(ranked[0].said, vec!["judge"]);
        assert_eq!(unheard(&plan, &clips), vec!["flurbs"]);
        // Without speech, an unknown word stays unknown.
        let silent = [clip("a", 0.0, &[])];
        assert_eq!(unheard(&plan, &silent), vec!["judge", "flurbs"]);
        assert!(rank(&plan, &silent).is_empty());
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

    fn frames(list: &[&[(&str, usize)]]) -> Vec<BTreeMap<String, usize>> {
        list.iter()
            .map(|f| f.iter().map(|(l, n)| ((*l).to_owned(), *n)).collect())
            .collect()
    }

    #[test]
    fn counts_togetherness_and_negation_are_read() {
        let plan = understand("at least three people");
        assert_eq!((plan.labels(), plan.terms[0].at_least), (vec!["person"], 3));
        assert!(plan.unknown.is_empty(), "{:?}", plan.unknown);
        assert_eq!(understand("two dogs").terms[0].at_least, 2);
        assert_eq!(understand("more than 2 cars").terms[0].at_least, 3);
        assert_eq!(understand("a dog").terms[0].at_least, 1);
        assert!(understand("a person and a bicycle").together);
        assert!(understand("a person with a bicycle").together);
        assert!(!understand("a person or a bicycle").together);
        assert!(!understand("find scenes with cars").together, "one object");
        let plan = understand("a street without cars");
        assert!(plan.terms.is_empty());
        assert_eq!(plan.without[0].labels, vec!["car"]);
        assert_eq!(plan.unknown, vec!["street"]);
        let plan = understand("people but no dogs");
        assert_eq!(
            (plan.labels(), plan.without[0].labels.clone()),
            (vec!["person"], vec!["dog"])
        );
    }

    #[test]
    fn counts_togetherness_and_negation_rank_by_frames() {
        let crowd = frames(&[&[("person", 3)], &[("person", 1), ("bicycle", 1)]]);
        let apart = frames(&[&[("person", 1)], &[("bicycle", 1), ("car", 1)]]);
        let mut a = clip("crowd", 0.0, &[("person", 0.9, 2), ("bicycle", 0.8, 1)]);
        a.frame_labels = &crowd;
        let mut b = clip(
            "apart",
            2.0,
            &[("person", 0.9, 1), ("bicycle", 0.8, 1), ("car", 0.7, 1)],
        );
        b.frame_labels = &apart;
        let clips = [a, b];
        let three = rank(&understand("at least three people"), &clips);
        assert_eq!(order(&three), vec!["crowd"]);
        assert!(
            three[0].why[0].starts_with("3 or more person in 1 of"),
            "{:?}",
            three[0].why
        );
        let together = rank(&understand("a person and a bicycle"), &clips);
        assert_eq!(order(&together), vec!["crowd"]);
        assert!(
            together[0]
                .why
                .iter()
                .any(|w| w.contains("together in 1 of"))
        );
        assert_eq!(
            order(&rank(&understand("a person or a bicycle"), &clips)).len(),
            2
        );
        let no_cars = rank(&understand("a street without cars"), &clips);
        assert_eq!(order(&no_cars), vec!["crowd"]);
        assert_eq!(no_cars[0].why, vec!["no car in 10 frames"]);
        assert_eq!(
            order(&rank(&understand("people without cars"), &clips)),
            vec!["crowd"]
        );
    }
}
