//! all-MiniLM-L6-v2 as the orchestrator runs it (candle, the model's own tokenizer.json)
//! against the published sentence-transformers quickstart, and the detector labels it reads
//! words outside the word table as. Needs `scripts/fetch-minilm` (the model in
//! `$FAVE_MODELS/all-MiniLM-L6-v2`, or `FAVE_EMBED_DIR`).

use orchestrator::embed::{DIM, Semantic, cosine, model_dir};
use orchestrator::query::{self, Meaning};

fn model() -> Semantic {
    Semantic::load(&model_dir()).expect("the model (scripts/fetch-minilm)")
}

/// sentence-transformers' quickstart: the three sentences' cosine similarities are 0.6660,
/// 0.1046 and 0.1411.
#[test]
fn embeddings_match_the_sentence_transformers_quickstart() {
    let m = model();
    let e = m
        .embedder()
        .embed(&[
            "The weather is lovely today.",
            "It's so sunny outside!",
            "He drove to the stadium.",
        ])
        .expect("embeddings");
    assert_eq!(e.len(), 3);
    for v in &e {
        assert_eq!(v.len(), DIM);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit length: {norm}");
    }
    let pairs = [
        (cosine(&e[0], &e[1]), 0.6660),
        (cosine(&e[0], &e[2]), 0.1046),
        (cosine(&e[1], &e[2]), 0.1411),
    ];
    println!("cosines: {pairs:?}");
    for (got, want) in pairs {
        assert!((got - want).abs() < 1e-3, "{got} vs {want}");
    }
    // A batch pads its shorter texts: each embedding is the one it has alone.
    let alone = m
        .embedder()
        .embed(&["He drove to the stadium."])
        .expect("one");
    assert!(cosine(&alone[0], &e[2]) > 0.9999);
}

/// Words for detector labels that a person might use instead of the label, mapped by
/// meaning alone (not through the word table), and words for no label left alone.
#[test]
fn words_outside_the_table_map_to_the_nearest_label() {
    let m = model();
    let expected = [
        ("automobile", "car"),
        ("sedan", "car"),
        ("puppy", "dog"),
        ("lorry", "truck"),
        ("pickup", "truck"),
        ("couch", "sofa"),
        ("smartphone", "cell phone"),
        ("kitten", "cat"),
    ];
    for (word, label) in expected {
        let (nearest, similarity, margin) = m.nearest(word).expect("an embedding");
        println!("{word:>12} → {nearest} ({similarity:.3}, {margin:.3} nearer than the next)");
        assert_eq!(nearest, label, "{word}");
        assert_eq!(
            m.label_of(word),
            Some((nearest, similarity)),
            "{word} is near enough"
        );
    }
    for word in [
        "street",
        "money",
        "nothing",
        "yesterday",
        "xylophone",
        "stool",
        "river",
    ] {
        let (nearest, similarity, margin) = m.nearest(word).expect("an embedding");
        println!("{word:>12} → {nearest} ({similarity:.3}, {margin:.3} nearer): not near enough");
        assert_eq!(m.label_of(word), None, "{word} maps to nothing");
    }
}

/// The query reader with the model: table words as before, other words by meaning, words
/// of no label still not understood.
#[test]
fn queries_are_read_beyond_the_word_table() {
    let m = model();
    let plan = query::understand_with("a sedan near a xylophone", Some(&m));
    assert_eq!(plan.labels(), vec!["car"]);
    assert!(plan.terms[0].similarity.is_some(), "read by meaning");
    assert_eq!(plan.unknown, vec!["xylophone"]);
    let plan = query::understand_with("cars", Some(&m));
    assert_eq!(plan.terms[0].similarity, None, "the table answers first");
    let plan = query::understand_with("someone talking about money", Some(&m));
    assert_eq!(plan.phrases, vec!["money"]);
    assert_eq!(plan.meanings.len(), 1, "the phrase is embedded");
}

/// What someone is asked to be heard saying matches, by meaning, a segment that says it in
/// other words, and not one about something else.
#[test]
fn what_is_said_matches_by_meaning() {
    let m = model();
    let plan = query::understand_with("someone talking about money", Some(&m));
    let (_, money) = &plan.meanings[0];
    let e = m
        .embedder()
        .embed(&[
            "I need the cash by Friday.",
            "The bank called about the loan.",
            "The weather is lovely today.",
            "Please open the door and turn on the lights.",
        ])
        .expect("embeddings");
    let sims: Vec<f32> = e.iter().map(|s| cosine(money, s)).collect();
    println!("\"talking about money\" against the segments: {sims:?}");
    assert!(
        sims[..2].iter().all(|s| *s >= query::SAID_SIMILARITY),
        "{sims:?}"
    );
    assert!(
        sims[2..].iter().all(|s| *s < query::SAID_SIMILARITY),
        "{sims:?}"
    );
}
