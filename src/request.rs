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
    /// A pipeline that stands for its last command (its reply is the caller's).
    last_only: bool,
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
            last_only: false,
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
            last_only: false,
        }
    }

    /// A pipeline that stands for its last command: its label, its name in errors, and its
    /// reply is the caller's (the others prepare it).
    pub(crate) fn pipeline_as(pipe: redis::Pipeline, label: CommandLabel) -> Self {
        Self {
            body: Body::Pipeline(pipe),
            label,
            node: None,
            last_only: true,
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

    /// Whether it writes (for a handle whose writes wait for replicas): a command not known
    /// to only read, or a pipeline holding one.
    pub(crate) fn writes(&self) -> bool {
        match &self.body {
            Body::Cmd(cmd) => !crate::command::is_read_only(cmd),
            Body::Pipeline(pipe) => pipe.cmd_iter().any(|c| !crate::command::is_read_only(c)),
        }
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

    /// Sends this request on `conn` (behind `ASKING` for an `ASK` redirect): one command's
    /// reply, or a pipeline's replies (a transaction's: `EXEC`'s).
    pub(crate) async fn send(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        ask: bool,
    ) -> redis::RedisResult<redis::Value> {
        match &self.body {
            Body::Cmd(cmd) if ask => {
                let mut asking = redis::pipe();
                asking.cmd("ASKING").ignore().add_command(cmd.clone());
                let mut replies: Vec<redis::Value> = asking.query_async(conn).await?;
                Ok(replies.pop().unwrap_or(redis::Value::Nil))
            }
            Body::Cmd(cmd) => conn.send_packed_command(cmd).await,
            // Boxed: a pipeline's future is large.
            Body::Pipeline(pipe) => Box::pin(pipe.query_async::<redis::Value>(conn)).await,
        }
    }

    /// The caller's reply from what the connection answered: a pipeline that stands for its last
    /// command ([`pipeline_as`](Self::pipeline_as)) answers that command's reply.
    pub(crate) fn reply_of(&self, value: redis::Value) -> redis::Value {
        match (&self.body, value) {
            (Body::Pipeline(_), redis::Value::Array(mut replies)) if self.last_only => {
                replies.pop().unwrap_or(redis::Value::Nil)
            }
            (_, value) => value,
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
