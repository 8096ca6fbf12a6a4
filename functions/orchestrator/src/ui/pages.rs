//! The pages, rendered on the server as HTML (maud escapes every value it is given). Every
//! link is relative, through `root` (the way back to `/ui/` from the page's own path), so
//! the pages work under the gateway's `/function/orchestrator/` as under `fave up`.

use chrono::{DateTime, Utc};
use fave_common::contract::api::RequestPage;
use fave_common::contract::detect;
use fave_common::contract::library::{FoundMoment, QueryAnswer, VideoPage};
use fave_common::contract::report::Moment;
use fave_common::error::ApiError;
use fave_common::state::RequestStatus;
use fave_common::timeline::duration;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::view::{ClipView, FrameView, RequestView};

/// Every page's frame: the head, the navigation with the search box, the script.
pub fn layout(root: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · fave" }
                link rel="stylesheet" href={ (root) "assets/fave.css" };
            }
            body {
                header {
                    nav {
                        a.brand href=(if root.is_empty() { "./" } else { root }) { "fave" }
                        a href=(if root.is_empty() { "./" } else { root }) { "Requests" }
                        a href={ (root) "videos" } { "Videos" }
                        form.search action={ (root) "search" } method="get" {
                            input type="search" name="q" placeholder="Search the library: cars, a man talking…" aria-label="Search the library";
                            button type="submit" { "Search" }
                        }
                    }
                }
                main { (body) }
                script src={ (root) "assets/fave.js" } defer {}
            }
        }
    }
}

fn status_badge(status: RequestStatus) -> Markup {
    html! { span class={ "status " (status.as_str().to_lowercase()) } { (status.as_str()) } }
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn seconds(t: f64) -> String {
    format!("{t:.1} s")
}

/// `/ui/`: the requests, a page at a time, filtered by status.
pub fn requests(page: &RequestPage, status: Option<RequestStatus>, limit: Option<usize>) -> Markup {
    let live = page.requests.iter().any(|r| !r.status.is_terminal());
    let filters = [
        None,
        Some(RequestStatus::Running),
        Some(RequestStatus::Completed),
        Some(RequestStatus::Failed),
        Some(RequestStatus::Cancelled),
    ];
    let next = page.next_cursor.as_ref().map(|cursor| {
        let mut href = format!("?cursor={cursor}");
        if let Some(s) = status {
            href.push_str(&format!("&status={}", s.as_str()));
        }
        if let Some(l) = limit {
            href.push_str(&format!("&limit={l}"));
        }
        href
    });
    let body = html! {
        h1 { "Requests" }
        p.filters {
            @for f in filters {
                @let href = match f { Some(s) => format!("?status={}", s.as_str()), None => "./".to_owned() };
                a href=(href) class=[(f == status).then_some("current")] {
                    (f.map_or("All", RequestStatus::as_str))
                }
            }
        }
        @if page.requests.is_empty() {
            p.empty { "No requests" @if let Some(s) = status { " " (s.as_str()) } "." }
        } @else {
            table.requests data-live[live] {
                thead { tr { th { "Request" } th { "Status" } th { "Video" } th { "Query" } th { "Created" } th { "Took" } th { "Error" } } }
                tbody {
                    @for r in &page.requests {
                        tr data-request=(r.request_id) data-status=(r.status.as_str()) {
                            td { a href={ "requests/" (r.request_id) } { code { (r.request_id) } } }
                            td { (status_badge(r.status)) }
                            td.uri title=(r.video_uri) { (r.video_uri) }
                            td { (r.query.as_deref().unwrap_or("")) }
                            td { (when(r.created_at)) }
                            td { @if r.status.is_terminal() { (duration((r.updated_at - r.created_at).num_milliseconds() as f64 / 1e3)) } }
                            td { @if let Some(code) = &r.error_code { code.error { (code) } } }
                        }
                    }
                }
            }
        }
        @if let Some(href) = next { p { a.next href=(href) { "Next page →" } } }
    };
    layout("", "Requests", body)
}

/// `/ui/requests/{id}`: one request, whole. `at` opens one clip's video at a moment
/// (`?clip=…&t=…`, as the search results link).
pub fn request(view: &RequestView, at: Option<(&str, f64)>) -> Markup {
    let root = "../";
    let s = &view.state;
    let id = &s.request_id;
    let api = format!("{root}../requests/{id}");
    let body = html! {
        h1 { "Request " code { (id) } " " (status_badge(s.status)) }
        @if let Some(f) = &s.failure {
            div.failure role="alert" {
                strong.error-code { (f.error_code) }
                " " (f.error_detail)
            }
        }
        @if let Some(at) = s.video_deleted_at {
            div.failure { strong.error-code { "video_deleted" } " The video was deleted from the library at " (when(at)) "; its results went with it." }
        }
        dl.facts {
            dt { "Video" } dd.uri { (s.submission.video_uri) }
            @if let Some(q) = &s.submission.query { dt { "Query" } dd { (q) } }
            dt { "Profile" } dd { (format!("{:?}", s.submission.profile).to_lowercase()) }
            dt { "Created" } dd { (when(s.created_at)) }
            @if let Some(end) = s.ended_at { dt { "Took" } dd { (duration((end - s.created_at).num_milliseconds() as f64 / 1e3)) } }
            @if let Some(a) = &s.analysis {
                dt { "Analysis" }
                dd { code { (a.analysis) } " of video " code { (a.video) }
                     @if a.reused { " — answered from the library, no stage ran" } }
            }
            dt { "Raw" }
            dd { a href=(api) { "state.json" } @if view.result.is_some() { " · " a href={ (api) "/result" } { "final.json" } } }
        }
        @if let Some(answer) = view.result.as_ref().and_then(|r| r.answer.as_ref()) {
            section.answer {
                h2 { "Answer: " q { (answer.query) } }
                p { (answer.message) }
                @if !answer.clips.is_empty() {
                    ol.moments {
                        @for m in &answer.clips {
                            li data-clip=(m.clip) {
                                a href={ "#" (m.clip) } { (m.clip) }
                                " " (seconds(m.start_s)) "–" (seconds(m.end_s))
                                " · score " (format!("{:.2}", m.score))
                                (why(m))
                            }
                        }
                    }
                }
            }
        }
        section.timeline {
            h2 { "Timeline" }
            div.timeline-picture { (PreEscaped(&view.timeline)) }
        }
        section {
            h2 { (view.clips.len()) " clips" }
            @for clip in &view.clips {
                (clip_card(root, &view.state.request_id.to_string(), clip, at))
            }
        }
    };
    let live = !s.status.is_terminal();
    let body = html! { div.request data-request=(id) data-live[live] { (body) } };
    layout(root, &format!("Request {id}"), body)
}

fn why(m: &Moment) -> Markup {
    html! {
        @if !m.why.is_empty() { ul.why { @for w in &m.why { li { (w) } } } }
    }
}

fn clip_card(root: &str, request: &str, clip: &ClipView, at: Option<(&str, f64)>) -> Markup {
    let r = &clip.report;
    let start_at = at
        .filter(|(c, _)| *c == r.clip.as_str())
        .map(|(_, t)| (t - r.start_s).max(0.0));
    let src = format!("{root}requests/{request}/media/{}", r.key);
    let src = match start_at {
        Some(t) => format!("{src}#t={t:.2}"),
        None => src,
    };
    html! {
        article.clip id=(r.clip) data-clip=(r.clip) {
            h3 { (r.clip) " · " (seconds(r.start_s)) "–" (seconds(r.end_s)) }
            @if !r.key.is_empty() {
                video controls preload="metadata" src=(src) autoplay[start_at.is_some()] muted[start_at.is_some()] {}
            }
            @if !r.labels.is_empty() {
                p.labels {
                    @for (label, seen) in &r.labels {
                        span.label { (label) " " (format!("{:.2}", seen.best_score)) " · " (seen.frames) " frames" }
                    }
                }
            }
            @if clip.frames.is_empty() {
                p.empty { "No frames looked at yet." }
            } @else {
                div.frames {
                    @for f in &clip.frames { (frame(root, request, f, &[])) }
                }
            }
            @if let Some(t) = &r.transcript {
                div.transcript {
                    h4 { "Said" }
                    @if t.segments.is_empty() { p.empty { "Nothing." } }
                    @for seg in &t.segments {
                        p { span.time { (seconds(seg.start_s)) } " " (seg.text) }
                    }
                }
            }
        }
    }
}

/// A frame as a thumbnail with its detections drawn over it, in the frame's own pixels
/// (the SVG's viewBox), so the boxes stay where they are at any size. `matched` labels are
/// drawn stronger.
fn frame(root: &str, request: &str, f: &FrameView, matched: &[String]) -> Markup {
    let (w, h) = (f.width.max(1), f.height.max(1));
    let font = (w as f32 / 32.0).max(8.0);
    html! {
        figure.frame data-time=(format!("{:.3}", f.time_s)) style={ "aspect-ratio: " (w) " / " (h) } {
            img loading="lazy" alt={ "frame at " (seconds(f.time_s)) } src={ (root) "requests/" (request) "/media/" (f.key) };
            svg.boxes xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (w) " " (h) } preserveAspectRatio="none" {
                @for d in &f.detections {
                    (detection_box(d, font, matched.contains(&d.label)))
                }
            }
            figcaption { (seconds(f.time_s)) @if f.carried { " · carried" } }
        }
    }
}

fn detection_box(d: &detect::Detection, font: f32, matched: bool) -> Markup {
    let [x1, y1, x2, y2] = d.bbox;
    html! {
        g class={ "box" @if matched { " matched" } } data-label=(d.label) data-score=(format!("{:.2}", d.score)) {
            rect x=(x1) y=(y1) width=((x2 - x1).max(0.0)) height=((y2 - y1).max(0.0)) {}
            text x=(x1 + 2.0) y=((y1 + font).max(font)) font-size=(font) { (d.label) " " (format!("{:.2}", d.score)) }
        }
    }
}

/// `/ui/videos`: the library.
pub fn videos(page: &VideoPage) -> Markup {
    let body = html! {
        h1 { "Videos" }
        @if page.videos.is_empty() {
            p.empty { "The library is empty: a video is added when a request for it completes." }
        } @else {
            table.videos {
                thead { tr { th { "Video" } th { "Last submitted as" } th { "Size" } th { "Analyses" } th { "Last seen" } th {} } }
                tbody {
                    @for v in &page.videos {
                        tr data-video=(v.video) {
                            td { code title=(v.video) { (v.video.to_string().get(..12).unwrap_or_default()) "…" } }
                            td.uri { (v.uri.as_deref().unwrap_or("")) }
                            td { @if let Some(b) = v.bytes { (format!("{:.1} MB", b as f64 / 1e6)) } }
                            td { (v.analyses.len()) }
                            td { @if let Some(at) = v.last_seen { (when(at)) } }
                            td {
                                form action="search" method="get" {
                                    input type="hidden" name="video" value=(v.video);
                                    input type="search" name="q" placeholder="Search this video" aria-label="Search this video";
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(cursor) = &page.next_cursor { p { a.next href={ "?cursor=" (cursor) } { "Next page →" } } }
    };
    layout("", "Videos", body)
}

/// One search result: its moment, and the frame to show with it.
pub struct Found<'a> {
    pub found: &'a FoundMoment,
    pub frame: Option<&'a FrameView>,
}

/// What a search came to.
pub enum Searched<'a> {
    /// No query yet: the form alone.
    Nothing,
    /// The query was refused (too long, an unknown video): why.
    Refused(&'a ApiError),
    Found(&'a QueryAnswer, &'a [Found<'a>]),
}

/// `/ui/search?q=…`: the query, how it was understood, and the moments found.
pub fn search(q: &str, video: Option<&str>, searched: Searched<'_>) -> Markup {
    let body = html! {
        h1 { "Search" }
        form.search-page action="search" method="get" {
            input type="search" name="q" value=(q) placeholder="cars, a man with a dog, someone saying hello" aria-label="Search";
            @if let Some(v) = video { input type="hidden" name="video" value=(v); }
            button type="submit" { "Search" }
        }
        @if let Searched::Refused(e) = searched {
            div.failure role="alert" { strong.error-code { (e.code) } " " (e.message) }
        }
        @if let Searched::Found(answer, found) = searched {
            p.understood {
                @if answer.labels.is_empty() && answer.speech.is_empty() {
                    "Nothing in the query was understood."
                } @else {
                    "Looked for "
                    @for (i, l) in answer.labels.iter().enumerate() { @if i > 0 { ", " } strong { (l) } }
                    @if !answer.speech.is_empty() { @if !answer.labels.is_empty() { " and " } "speech about " @for (i, s) in answer.speech.iter().enumerate() { @if i > 0 { ", " } q { (s) } } }
                    " in " (answer.videos_searched) " videos, in " (format!("{:.1}", answer.took_ms)) " ms."
                }
            }
            @if found.is_empty() {
                p.empty { "No moments found." }
            } @else {
                ol.results {
                    @for f in found { (result(f)) }
                }
            }
        }
    };
    layout("", "Search", body)
}

fn result(f: &Found<'_>) -> Markup {
    let m = &f.found.moment;
    let request = f.found.request_id.to_string();
    let at = f.frame.map_or(m.start_s, |fr| fr.time_s);
    let href = format!("requests/{request}?clip={}&t={at:.2}#{}", m.clip, m.clip);
    html! {
        li.result data-video=(f.found.video) data-clip=(m.clip) {
            a.thumb href=(href) {
                @if let Some(fr) = f.frame { (frame("", &request, fr, &m.matched)) }
            }
            div {
                a href=(href) { "Video " code { (f.found.video.to_string().get(..12).unwrap_or_default()) "…" } " · " (m.clip) " · " (seconds(m.start_s)) "–" (seconds(m.end_s)) }
                " · score " (format!("{:.2}", m.score))
                @if !m.matched.is_empty() { p.labels { @for l in &m.matched { span.label { (l) } } } }
                @if !m.said.is_empty() { p { "Said: " @for s in &m.said { q { (s) } " " } } }
                (why(m))
            }
        }
    }
}

/// The frame a moment is best shown by: where its first matched label scored best, else
/// the clip's first.
pub fn best_frame<'a>(clip: &'a ClipView, matched: &[String]) -> Option<&'a FrameView> {
    let best = matched
        .iter()
        .find_map(|l| clip.report.labels.get(l))
        .map(|seen| seen.best_time_s);
    match best {
        Some(t) => clip
            .frames
            .iter()
            .min_by(|a, b| (a.time_s - t).abs().total_cmp(&(b.time_s - t).abs())),
        None => clip.frames.first(),
    }
}
