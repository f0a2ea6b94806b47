//! What a caller asks a connection to run: one command or a pipeline, with its metric label
//! (what the crate knows of a command from its arguments is `command`).

use crate::config::NodeAddr;
use crate::metrics::CommandLabel;

/// A command or pipeline, ready to be written.
#[derive(Debug)]
pub(crate) struct Request {
    body: Body,
    label: CommandLabel,
    /// On a cluster: the node it must run on (a keyspace walk visits each primary), instead of
    /// the node its keys' slot names.
    node: Option<Box<NodeAddr>>,
}

#[derive(Debug)]
enum Body {
    Cmd(redis::Cmd),
    Pipeline(redis::Pipeline),
}

impl Request {
    /// A command whose label the caller knows (the typed methods).
    pub(crate) fn typed(cmd: redis::Cmd, label: CommandLabel) -> Self {
        Self {
            body: Body::Cmd(cmd),
            label,
            node: None,
        }
    }

    /// A raw command: its label is decoded from its name (`other` when not in the fixed set).
    pub(crate) fn raw(cmd: redis::Cmd) -> Self {
        let label = crate::command::name(&cmd).map_or(CommandLabel::Other, CommandLabel::for_name);
        Self::typed(cmd, label)
    }

    /// A pipeline (`multi` when it is a `MULTI`/`EXEC` transaction).
    pub(crate) fn pipeline(pipe: redis::Pipeline) -> Self {
        let label = if pipe.is_transaction() {
            CommandLabel::Multi
        } else {
            CommandLabel::Pipeline
        };
        Self {
            body: Body::Pipeline(pipe),
            label,
            node: None,
        }
    }

    /// A pipeline that stands for one command (its label and its name in errors).
    pub(crate) fn pipeline_as(pipe: redis::Pipeline, label: CommandLabel) -> Self {
        Self {
            body: Body::Pipeline(pipe),
            label,
            node: None,
        }
    }

    /// This request, to run on the cluster node `node` (ignored on one server).
    pub(crate) fn at(mut self, node: Option<&NodeAddr>) -> Self {
        self.node = node.map(|n| Box::new(n.clone()));
        self
    }

    /// The cluster node it must run on, if one was named.
    pub(crate) fn node(&self) -> Option<&NodeAddr> {
        self.node.as_deref()
    }

    /// The metric label.
    pub(crate) fn label(&self) -> CommandLabel {
        self.label
    }

    /// The command, when this is a single command (not a pipeline).
    pub(crate) fn as_cmd(&self) -> Option<&redis::Cmd> {
        match &self.body {
            Body::Cmd(cmd) => Some(cmd),
            Body::Pipeline(_) => None,
        }
    }

    /// The pipeline, when this is one.
    pub(crate) fn as_pipeline(&self) -> Option<&redis::Pipeline> {
        match &self.body {
            Body::Pipeline(pipe) => Some(pipe),
            Body::Cmd(_) => None,
        }
    }

    /// The command name for errors (upper case): the command's own name, `MULTI` or `PIPELINE`
    /// for pipelines, `COMMAND` when it has none.
    pub(crate) fn name(&self) -> String {
        match &self.body {
            Body::Cmd(cmd) => crate::command::name(cmd).map_or_else(
                || "COMMAND".to_string(),
                |n| String::from_utf8_lossy(n).to_ascii_uppercase(),
            ),
            Body::Pipeline(_) => self.label.name().to_ascii_uppercase(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_names() {
        let mut c = redis::cmd("get");
        c.arg("k");
        assert_eq!(Request::raw(c).name(), "GET");
        assert_eq!(
            Request::pipeline(redis::pipe().atomic().clone()).name(),
            "MULTI"
        );
        assert_eq!(Request::pipeline(redis::pipe()).name(), "PIPELINE");
        assert_eq!(
            Request::raw(redis::cmd("UNLINK")).label(),
            CommandLabel::Del
        );
        assert_eq!(
            Request::raw(redis::cmd("HGETALL")).label(),
            CommandLabel::Other
        );
    }
}
